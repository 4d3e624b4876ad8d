// Small progressive enhancements; every page works without them. Loaded as a file (CSP: no
// inline scripts).
"use strict";
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!box.matches || !box.matches("input[data-select-all]")) return;
  var form = box.closest("form");
  form.querySelectorAll("input[type=checkbox][name=entry]").forEach(function (entry) {
    entry.checked = box.checked;
  });
});
