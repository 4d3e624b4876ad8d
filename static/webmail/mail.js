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

// Draft autosave (the compose page's htmx post to #draft-status). htmx leaves the page as it
// is after an error answer, so "Draft saved at ..." would stay on screen while nothing is saved
// any more (a delegation revoked, the session ended): the answer is shown whatever its status.
(function () {
  function isAutosave(detail) {
    return detail && detail.target && detail.target.id === "draft-status";
  }

  function sayNotSaved(target, text) {
    target.textContent = "";
    var notice = document.createElement("span");
    notice.className = "notice bad";
    notice.setAttribute("role", "alert");
    notice.setAttribute("data-draft-error", "");
    notice.textContent = text;
    target.appendChild(notice);
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    if (!isAutosave(detail)) return;
    var xhr = detail.xhr;
    var asked = detail.pathInfo && detail.pathInfo.requestPath;
    if (xhr.responseURL && asked && new URL(xhr.responseURL).pathname !== asked) {
      // Redirected (to the sign-in page): never put that page into the status line.
      detail.shouldSwap = false;
      sayNotSaved(detail.target, "Draft not saved: you were signed out. Copy your text " +
                  "before you leave this page.");
      return;
    }
    if (xhr.status >= 400 && xhr.status < 500) {
      detail.shouldSwap = true;
      detail.isError = false;
    }
  });

  function failed(event) {
    if (!isAutosave(event.detail)) return;
    var status = event.detail.xhr && event.detail.xhr.status;
    if (status >= 400 && status < 500) return;  // shown by the swap above
    sayNotSaved(event.detail.target, "Draft not saved: the server could not be reached. It " +
                "is tried again as you type; keep this page open.");
  }
  document.addEventListener("htmx:responseError", failed);
  document.addEventListener("htmx:sendError", failed);

  // Sending while an autosave is on its way: that autosave would make a draft of the message
  // just sent (the first save of a page has no draft id for the send to discard). So no new
  // autosave starts once Send is pressed, and the send waits for the one under way (its
  // answer gives the form the draft id), at most a few seconds.
  var saving = 0;
  var sending = false;
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (!isAutosave(event.detail)) return;
    if (sending) {
      event.preventDefault();
      return;
    }
    saving += 1;
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (isAutosave(event.detail) && saving > 0) saving -= 1;
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.id !== "compose-form" || event.defaultPrevented) return;
    sending = true;
    if (saving === 0) return;
    event.preventDefault();
    var waited = 0;
    var timer = window.setInterval(function () {
      waited += 100;
      if (saving === 0 || waited >= 5000) {
        window.clearInterval(timer);
        HTMLFormElement.prototype.submit.call(form);
      }
    }, 100);
  });
  // Back to this page from the next one (bfcache): autosave works again.
  window.addEventListener("pageshow", function () { sending = false; saving = 0; });
})();

// Any other part of a page loaded in place (older messages, ...) that is refused or fails:
// say so instead of doing nothing. A refusal usually means the access to this mailbox changed.
document.addEventListener("htmx:responseError", function (event) {
  var detail = event.detail;
  if (!detail || (detail.target && detail.target.id === "draft-status")) return;
  var main = document.getElementById("mail-content");
  if (!main || document.getElementById("htmx-error")) return;
  var list = document.createElement("ul");
  list.className = "messages";
  list.id = "htmx-error";
  var item = document.createElement("li");
  item.className = "notice bad";
  var text = document.createElement("span");
  text.setAttribute("role", "alert");
  text.textContent = detail.xhr && detail.xhr.status < 500
    ? "This could not be loaded: your access to this mailbox may have changed. Reload the page."
    : "This could not be loaded because of a server error. Try again in a moment.";
  item.appendChild(text);
  list.appendChild(item);
  main.insertBefore(list, main.firstChild);
});
