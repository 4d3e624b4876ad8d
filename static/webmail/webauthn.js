// Security keys (WebAuthn) for sign-in and registration. A form marked data-webauthn="get" or
// "create" names, in data-webauthn-options, a JSON script element holding the server's options
// (bytes in base64url); on submit the key is asked, its answer goes into the hidden
// "credential" field as JSON (bytes in base64url again) and the form is posted. Loaded as a
// file from our own origin (CSP: no inline scripts).
"use strict";
(function () {
  function toBuffer(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toText(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeDescriptors(list) {
    (list || []).forEach(function (descriptor) { descriptor.id = toBuffer(descriptor.id); });
  }

  function creationOptions(options) {
    options.challenge = toBuffer(options.challenge);
    options.user.id = toBuffer(options.user.id);
    decodeDescriptors(options.excludeCredentials);
    return options;
  }

  function requestOptions(options) {
    options.challenge = toBuffer(options.challenge);
    decodeDescriptors(options.allowCredentials);
    return options;
  }

  // The JSON form of a PublicKeyCredential (WebAuthn L3 toJSON), written out by hand because
  // not every browser has credential.toJSON() yet.
  function encode(credential) {
    var response = credential.response;
    var json = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toText(response.clientDataJSON) }
    };
    if (credential.authenticatorAttachment) {
      json.authenticatorAttachment = credential.authenticatorAttachment;
    }
    if (response.attestationObject) {
      json.response.attestationObject = toText(response.attestationObject);
      if (response.getTransports) json.response.transports = response.getTransports();
    } else {
      json.response.authenticatorData = toText(response.authenticatorData);
      json.response.signature = toText(response.signature);
      if (response.userHandle) json.response.userHandle = toText(response.userHandle);
    }
    return JSON.stringify(json);
  }

  function explain(error) {
    if (error.name === "NotAllowedError") {
      return "The security key was not used (cancelled or timed out). Press the button to try again.";
    }
    if (error.name === "InvalidStateError") return "This security key is already registered.";
    if (error.name === "SecurityError") {
      return "This browser refused the request for this web address. Use the site's usual address.";
    }
    return "The security key could not be used (" + error.name + ").";
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.matches || !form.matches("form[data-webauthn]")) return;
    var field = form.querySelector("input[name=credential]");
    if (field.value) return;  // the key has answered: post it
    event.preventDefault();
    var status = form.querySelector("[data-webauthn-status]");
    if (!window.PublicKeyCredential || !navigator.credentials) {
      status.textContent = "This browser cannot use security keys here.";
      return;
    }
    var options = JSON.parse(document.getElementById(form.dataset.webauthnOptions).textContent);
    var button = form.querySelector("button[type=submit]");
    var asked = form.dataset.webauthn === "create"
      ? navigator.credentials.create({ publicKey: creationOptions(options) })
      : navigator.credentials.get({ publicKey: requestOptions(options) });
    button.disabled = true;
    status.textContent = "Touch your security key…";
    asked.then(function (credential) {
      field.value = encode(credential);
      status.textContent = "Checking…";
      form.submit();
    }).catch(function (error) {
      button.disabled = false;
      // Nothing was posted, so the challenge in the page is still good for another try.
      status.textContent = explain(error);
    });
  });
})();
