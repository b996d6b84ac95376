// Dates in the viewer's time zone: every <time datetime="...Z"> keeps its UTC text as the fallback (and tooltip).
(function () {
  "use strict";
  function local(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return null;
    try {
      return d.toLocaleString(undefined, {year: "numeric", month: "short", day: "numeric", hour: "2-digit",
                                          minute: "2-digit", timeZoneName: "short"});
    } catch (e) { return d.toString(); }
  }
  function convert(root) {
    var nodes = (root || document).querySelectorAll("time[datetime]:not([data-local])");
    for (var i = 0; i < nodes.length; i++) {
      var t = nodes[i], text = local(t.getAttribute("datetime"));
      if (!text) continue;
      t.title = t.textContent;
      t.textContent = text;
      t.setAttribute("data-local", "1");
    }
  }
  window.segarenaLocalTimes = convert;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { convert(); });
  else convert();
})();
