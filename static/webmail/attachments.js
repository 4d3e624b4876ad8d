// The compose page: tells the clinician at once when the chosen files are more than a secure
// message can carry, and keeps the form from being sent with them (an upload over the limit is
// refused whole, after the wait). The allowance comes from the page (data-allowance, computed
// by the server); the server checks again whatever happens here.
"use strict";
(function () {
  var box = document.getElementById("attachments-check");
  if (!box) return;
  var input = box.querySelector("input[type=file]");
  var status = document.getElementById("attachments-size");
  var clear = document.getElementById("attachments-clear");
  var clearRow = document.getElementById("attachments-clear-row");
  var form = input && input.form;
  if (!form || !status || !clear || !clearRow) return;
  var allowance = Number(box.dataset.allowance);
  var allowanceText = box.dataset.allowanceText;
  var describedBy = input.getAttribute("aria-describedby") || "";
  var invalid = input.getAttribute("aria-invalid");
  var MB = 1024 * 1024;

  // Rounded up, so that a selection over the allowance never reads as within it.
  function sizeText(size) {
    if (size >= MB) return String(Math.ceil(size * 10 / MB) / 10) + " MB";
    return String(Math.ceil(size / 1024)) + " KB";
  }

  function total() {
    var sum = 0;
    for (var i = 0; i < input.files.length; i++) sum += input.files[i].size;
    return sum;
  }

  function say(text) {
    // Emptied first, so a screen reader announces the same words again on a second attempt.
    status.textContent = "";
    if (!text) return;
    window.setTimeout(function () {
      var message = document.createElement("p");
      message.className = "notice bad";
      message.id = "attachments-size-message";
      message.textContent = text;
      status.appendChild(message);
    }, 50);
  }

  // True when the chosen files fit (or none is chosen); otherwise says so and returns false.
  function check() {
    var size = total();
    var over = input.files.length > 0 && size > allowance;
    if (!over) {
      say("");
      clearRow.hidden = true;
      if (invalid === null) input.removeAttribute("aria-invalid");
      else input.setAttribute("aria-invalid", invalid);
      input.setAttribute("aria-describedby", describedBy);
      return true;
    }
    var these = input.files.length === 1 ? "This file is " : "These files are ";
    var room = allowance > 0
      ? "secure messages can carry about " + allowanceText + " of attachments."
      : "secure messages have no room left for attachments.";
    say(these + sizeText(size) + "; " + room +
        " Send them in several messages, or share a smaller file.");
    clearRow.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby",
                       (describedBy + " attachments-size-message").trim());
    return false;
  }

  input.addEventListener("change", check);
  clear.addEventListener("click", function () {
    input.value = "";
    check();
    input.focus();
  });
  form.addEventListener("submit", function (event) {
    if (check()) return;
    event.preventDefault();
    input.focus();
  });
})();
