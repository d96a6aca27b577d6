// minipbx console: optional niceties only; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Dashboard: reload every N seconds while the page is visible.
  var el = document.querySelector("[data-refresh]");
  if (el) {
    var seconds = parseInt(el.getAttribute("data-refresh"), 10) || 20;
    setInterval(function () {
      if (document.visibilityState === "visible" && !document.querySelector("details[open]")) {
        window.location.reload();
      }
    }, seconds * 1000);
  }
  // Put the focus on the first field with an error.
  var bad = document.querySelector("[aria-invalid=true]");
  if (bad) { bad.focus(); }
});
