// Automatic logoff (HIPAA 164.312(a)(2)(iii)). The server ends a session a fixed time after its
// last request; this keeps the same clock in the page so that a screen left open does not go on
// showing a message until someone clicks: a warning a minute before, then the mail is taken off
// the screen and the session is ended for real.
//
// Only requests restart the clock (the page load, htmx requests, form submissions, "Stay signed
// in"), not mouse moves or key presses: those do not reach the server, so counting them would
// leave the page showing mail after the server had already ended the session.
//
// Tabs share one session, so each records its last request in localStorage (a time, nothing
// else) and a tab in use keeps the others from signing everyone out.
"use strict";
(function () {
  var form = document.getElementById("idle-logoff");
  var dialog = document.getElementById("idle-warning");
  if (!form || !dialog) return;
  var idleMs = Number(form.getAttribute("data-idle-seconds")) * 1000;
  if (!(idleMs > 0)) return;
  // A minute's warning; with a short timeout, the last fifth of it.
  var warnMs = Math.min(60000, idleMs * 0.2);
  var countdown = dialog.querySelector("[data-idle-countdown]");
  var stay = dialog.querySelector("[data-idle-stay]");
  var LAST_CONTACT = "hisp.webmail.last-contact";
  var SIGNED_OUT = "hisp.webmail.idle-signed-out";
  // "Sign out" pressed in one tab: the others leave the mail too, without the idle message.
  var LEFT = "hisp.webmail.signed-out";
  // When the navigation began, before the server saw the request: the page's deadline can only
  // fall a little before the server's, never after it.
  var lastContact = Math.floor(performance.timeOrigin || Date.now());
  var returnFocus = null;
  var signingOut = false;
  var timer = null;

  function shared() {
    try {
      return Number(window.localStorage.getItem(LAST_CONTACT)) || 0;
    } catch (error) {
      return 0; // storage off: each tab keeps its own clock
    }
  }

  function share(key, value) {
    try {
      window.localStorage.setItem(key, String(value));
    } catch (error) { /* storage off */ }
  }

  function contact(at) {
    if (signingOut) return;
    lastContact = Math.max(lastContact, at);
    if (lastContact > shared()) share(LAST_CONTACT, lastContact);
    tick();
  }

  function plural(n) {
    return n + (n === 1 ? " second" : " seconds");
  }

  function showWarning(left) {
    countdown.textContent = plural(Math.max(1, Math.ceil(left / 1000)));
    if (dialog.open) return;
    returnFocus = document.activeElement;
    if (typeof dialog.showModal === "function") dialog.showModal();
    else dialog.setAttribute("open", "");
    stay.focus();
  }

  function closeWarning() {
    if (!dialog.open) return;
    if (typeof dialog.close === "function") dialog.close();
    else dialog.removeAttribute("open");
    if (returnFocus && document.contains(returnFocus) && returnFocus.focus) returnFocus.focus();
    returnFocus = null;
  }

  function signOut() {
    if (signingOut) return;
    signingOut = true;
    window.clearInterval(timer);
    closeWarning();
    // Off the screen (and out of the DOM) first: the sign-out is a request that may take a while.
    var main = document.getElementById("main") || document.body;
    var note = document.createElement("p");
    note.setAttribute("role", "status");
    note.textContent = "Signing you out…";
    main.replaceChildren(form, note);
    document.title = "Signing out · HISP"; // a message page's title is its subject
    share(SIGNED_OUT, Date.now());
    form.submit();
  }

  function leave() {
    // Another tab signed out by hand: the session is over; clear this screen and go to the
    // sign-in page (no sign-out request of our own: there is no session left to end).
    if (signingOut) return;
    signingOut = true;
    window.clearInterval(timer);
    closeWarning();
    var main = document.getElementById("main") || document.body;
    main.replaceChildren();
    document.title = "Signed out · HISP";
    window.location.replace(form.getAttribute("data-login-url") || "/");
  }

  function tick() {
    if (signingOut) return;
    var left = Math.max(lastContact, shared()) + idleMs - Date.now();
    if (left <= 0) signOut();
    else if (left <= warnMs) showWarning(left);
    else closeWarning();
  }

  function keepAlive() {
    var sent = Date.now();
    var token = form.querySelector("input[name=csrfmiddlewaretoken]");
    stay.disabled = true;
    window.fetch(form.getAttribute("data-keep-alive-url"), {
      method: "POST",
      headers: {"X-CSRFToken": token ? token.value : ""},
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual",
    }).then(function (response) {
      // Anything but 204 (a redirect to sign in) means the server has already ended the session.
      if (response.status === 204) contact(sent);
      else signOut();
    }, function () {
      // Offline: the warning stays, and the page still clears itself at the deadline.
    }).then(function () {
      stay.disabled = false;
    });
  }

  stay.addEventListener("click", keepAlive);
  // Escape on the warning means "I am here", as the button does, not "dismiss and forget".
  dialog.addEventListener("cancel", function (event) {
    event.preventDefault();
    keepAlive();
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail && event.detail.xhr;
    // 0: never reached the server; 5xx: Django does not save the session on a server error.
    if (xhr && xhr.status > 0 && xhr.status < 500) contact(Date.now());
  });
  document.addEventListener("submit", function (event) {
    // A form htmx sends itself is prevented here and counted by htmx:afterRequest instead.
    if (event.defaultPrevented) return;
    var target = event.target;
    if (target && target.getAttribute && target.getAttribute("action") === form.getAttribute("data-logout-url")) {
      share(LEFT, Date.now());
      return;
    }
    contact(Date.now());
  });
  window.addEventListener("storage", function (event) {
    if (event.key === SIGNED_OUT) signOut();
    else if (event.key === LEFT) leave();
    else if (event.key === LAST_CONTACT) tick();
  });
  // Timers stop while a computer sleeps and slow down in a background tab: look again at once.
  document.addEventListener("visibilitychange", tick);
  window.addEventListener("pageshow", function (event) {
    // Back to a page kept in memory after the sign-out: ask the server again (it asks to sign in).
    if (event.persisted && signingOut) window.location.reload();
    else tick();
  });
  timer = window.setInterval(tick, 1000);
  contact(lastContact); // this page's own load is a request other tabs should hear about
})();
