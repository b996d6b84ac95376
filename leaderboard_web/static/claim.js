// The claim link carries the code in its fragment (#code=...), which never reaches a server: copy it into the form.
(function () {
  "use strict";
  function fill() {
    var m = /(?:^#|&)code=([^&]+)/.exec(window.location.hash || "");
    var field = document.getElementById("claim_code");
    if (m && field) {
      field.value = decodeURIComponent(m[1]);
      history.replaceState(null, "", window.location.pathname);  // out of the address bar and history
    }
  }
  fill();
  window.addEventListener("hashchange", fill);
})();
