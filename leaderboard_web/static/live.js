// Live state on the participant pages: poll the page's JSON (data-poll) while something is queued or running.
(function () {
  "use strict";
  var FINAL = {succeeded: 1, failed: 1, cancelled: 1};
  var list = document.getElementById("my-submissions"), one = document.getElementById("result");
  var el = list || one;
  if (!el || !window.fetch) return;
  var url = el.getAttribute("data-poll"), delay = 3000;

  function text(node, value) { if (node && node.textContent !== value) node.textContent = value; }
  function fmt(v, n) { return v === null || v === undefined ? "" : Number(v).toFixed(n); }
  function queue(q) {
    if (!q) return "";
    var s = "position " + q.position + " of " + q.queued;
    return s + (q.estimate_s !== null && q.estimate_s !== undefined ? ", about " + Math.ceil(q.estimate_s / 60) + " min" : "");
  }
  function setState(cell, state) {
    var span = cell && cell.querySelector(".state");
    if (!span) return;
    span.className = "state state-" + state;
    text(span, state);
  }
  function updateList(data) {
    var busy = false, reload = false;
    data.submissions.forEach(function (s) {
      var row = list.querySelector('tr[data-id="' + s.id + '"]');
      if (!row) { reload = true; return; }
      if (!FINAL[s.state]) busy = true;
      setState(row.querySelector(".c-state"), s.state);
      text(row.querySelector(".c-progress"), s.total ? s.done + "/" + s.total + " cases" : "");
      text(row.querySelector(".c-queue"), queue(s.queue));
      text(row.querySelector(".c-dsc"), fmt(s.dsc, 3));
      text(row.querySelector(".c-nsd"), fmt(s.nsd, 3));
    });
    if (reload) { window.location.reload(); return false; }
    return busy;
  }
  function updateOne(r) {
    var was = one.getAttribute("data-final") === "true";
    setState(one, r.state);
    text(document.getElementById("reason"), r.reason ? "— " + r.reason : "");
    text(document.getElementById("progress"), (r.total ? r.done + "/" + r.total + " cases" : "not started") + " (attempt " + r.attempt + ")");
    text(document.getElementById("queue"), queue(r.queue) || "—");
    if (r.final && !was) { window.location.reload(); return false; }  // scores and cases: the full page
    return !r.final;
  }
  function poll() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (resp) { if (!resp.ok) throw new Error(resp.status); return resp.json(); })
      .then(function (data) {
        var again = list ? updateList(data) : updateOne(data);
        el.setAttribute("data-polled", String(Date.now()));
        if (again) setTimeout(poll, delay);
        else if (list) setTimeout(poll, 15000);  // idle: look for new submissions now and then
      })
      .catch(function () { delay = Math.min(delay * 2, 60000); setTimeout(poll, delay); });
  }
  setTimeout(poll, 1000);
})();
