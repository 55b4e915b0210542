// Herald console: selection for bulk republish, and a live view of what was republished.
// No framework; the page works without it (forms post, links navigate).
(function () {
  "use strict";

  function selectionControls() {
    var boxes = Array.prototype.slice.call(document.querySelectorAll('input[name="ids"]'));
    var all = document.querySelector("[data-select-all]");
    var button = document.querySelector("[data-selected-count]");
    if (!button) return;
    function refresh() {
      var n = boxes.filter(function (b) { return b.checked; }).length;
      button.disabled = n === 0;
      button.textContent = n ? "Republish " + n + " selected" : "Republish selected";
      if (all) all.checked = n > 0 && n === boxes.length;
    }
    boxes.forEach(function (b) { b.addEventListener("change", refresh); });
    if (all) {
      all.disabled = boxes.length === 0;
      all.addEventListener("change", function () {
        boxes.forEach(function (b) { b.checked = all.checked; });
        refresh();
      });
    }
    refresh();
  }

  function setBadge(el, kind, value) {
    if (!el || value === null || value === undefined || el.textContent === value) return;
    el.textContent = value;
    el.className = "badge " + kind + "-" + value;
    el.classList.add("changed");
  }

  function jobLine(job) {
    var p = document.createElement("p");
    p.className = "notice" + (job.running ? " running" : "");
    if (job.running) {
      p.textContent = "Republishing: " + (job.republished + job.skipped + job.failed) + " of " + job.total;
    } else {
      var text = "Bulk republish finished: " + job.republished + " of " + job.total + " republished";
      if (job.skipped) text += ", " + job.skipped + " skipped";
      if (job.failed) text += ", " + job.failed + " not republished (broker or database unavailable)";
      p.textContent = text;
    }
    return p;
  }

  function live() {
    var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-id]"));
    var total = document.querySelector('[data-live="pending-total"]');
    if (!rows.length && !total) return;
    var ids = rows.map(function (r) { return r.getAttribute("data-id"); }).join(",");
    function poll() {
      fetch("/console/live?ids=" + encodeURIComponent(ids), { credentials: "same-origin" })
        .then(function (r) {
          if (r.status === 401) { window.location.href = "/login"; throw new Error("logged out"); }
          return r.json();
        })
        .then(function (body) {
          if (!body.success) return;
          var data = body.data;
          rows.forEach(function (row) {
            var info = data.rows[row.getAttribute("data-id")];
            if (!info) return;
            setBadge(row.querySelector('[data-field="state"]'), "state", info.state);
            setBadge(row.querySelector('[data-field="notification"]'), "status", info.notification_status);
            if (info.state !== "pending") {
              var box = row.querySelector('input[name="ids"]');
              if (box) { box.checked = false; box.disabled = true; }
            }
          });
          if (total) total.textContent = data.pending_total;
          Object.keys(data.pending).forEach(function (channel) {
            var el = document.querySelector('[data-live="pending-' + channel + '"]');
            if (el) el.textContent = data.pending[channel];
          });
          var jobs = document.querySelector('[data-live="jobs"]');
          if (jobs) {
            jobs.textContent = "";
            data.jobs.forEach(function (job) { jobs.appendChild(jobLine(job)); });
          }
        })
        .catch(function () { /* try again on the next tick */ });
    }
    window.setInterval(poll, 3000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    selectionControls();
    live();
  });
})();
