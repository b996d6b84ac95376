// Leaderboard table: sort by any column, narrow the columns to one modality. No reload, no libraries.
(function () {
  "use strict";
  var table = document.getElementById("board");
  if (!table) return;
  var tbody = table.tBodies[0];
  var heads = table.querySelectorAll("thead tr.cols th");

  function value(td, type) {
    // the cell's text is the value (scores are shown at the precision the API serves)
    var v = td ? (td.getAttribute("data-v") || td.textContent).trim() : "";
    if (v === "") return null;
    if (type === "text") return v.toLowerCase();
    var n = parseFloat(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }

  function sortBy(index, type, dir) {
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.forEach(function (r, i) { r._i = i; });
    rows.sort(function (a, b) {
      var x = value(a.cells[index], type), y = value(b.cells[index], type);
      if (x === null && y === null) return a._i - b._i;
      if (x === null) return 1;  // empty cells (unranked, missing) always last
      if (y === null) return -1;
      if (x < y) return dir === "ascending" ? -1 : 1;
      if (x > y) return dir === "ascending" ? 1 : -1;
      return a._i - b._i;
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
  }

  Array.prototype.forEach.call(heads, function (th, index) {
    var button = th.querySelector("button") || th;
    button.addEventListener("click", function () {
      var type = th.getAttribute("data-type");
      var key = th.getAttribute("data-key");
      var current = th.getAttribute("aria-sort");
      // first click: best first (scores high→low; rank, runtime, score-of-ranks low→high)
      var lowFirst = type === "runtime" || type === "int" && key === "rank" || key === "score" || type === "text";
      var dir = current ? (current === "ascending" ? "descending" : "ascending") : (lowFirst ? "ascending" : "descending");
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir);
      sortBy(index, type, dir);
    });
  });

  var view = document.getElementById("view");
  function applyView() {
    var v = view.value;
    var cells = table.querySelectorAll("[data-mod]");
    Array.prototype.forEach.call(cells, function (c) {
      var m = c.getAttribute("data-mod");
      var show = v === "all" ? true : v === "overall" ? false : v === "size" ? m.indexOf("size:") === 0 : m === v;
      c.hidden = !show;
    });
    table.setAttribute("data-view", v);
    if (history.replaceState) {
      var u = new URL(location.href);
      if (v === "all") u.searchParams.delete("view"); else u.searchParams.set("view", v);
      history.replaceState(null, "", u);
    }
  }
  if (view) {
    var initial = new URL(location.href).searchParams.get("view");
    if (initial && view.querySelector('option[value="' + CSS.escape(initial) + '"]')) view.value = initial;
    view.addEventListener("change", applyView);
    applyView();
  }
})();
