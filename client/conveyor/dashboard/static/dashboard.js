// conveyor dashboard: the little JavaScript there is. Every page works
// without it; it adds live refresh (pausable) and bulk selection helpers.
(function () {
  "use strict";
  var body = document.body;
  var seconds = parseFloat(body.getAttribute("data-refresh-seconds")) || 5;
  var toggle = document.getElementById("live-toggle");
  var storageKey = "conveyor-dashboard-live";

  function live() {
    try { return window.localStorage.getItem(storageKey) !== "paused"; } catch (e) { return true; }
  }
  function showToggle() {
    toggle.hidden = false;
    toggle.textContent = live() ? "● Live" : "❚❚ Paused";
    toggle.classList.toggle("paused", !live());
    toggle.title = live() ? "Pages refresh every " + seconds + " s: click to pause"
                          : "Refresh paused: click to resume";
  }
  toggle.addEventListener("click", function () {
    try { window.localStorage.setItem(storageKey, live() ? "paused" : "live"); } catch (e) {}
    showToggle();
  });
  showToggle();

  // Refresh only what cannot lose the user's work: not while a box is
  // ticked, a field has focus, or on a confirmation page.
  function busy() {
    var main = document.getElementById("live");
    if (main.querySelector("[data-no-refresh]")) return true;
    if (main.querySelector("input[type=checkbox]:checked")) return true;
    var active = document.activeElement;
    if (active && active !== body && main.contains(active) &&
        /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName)) return true;
    if (main.querySelector("details[data-toggled]")) return true;
    return false;
  }
  function refresh() {
    if (!live() || document.hidden || busy()) return;
    fetch(window.location.href, { headers: { "X-Conveyor-Refresh": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok || r.status === 404 ? r.text() : null; })
      .then(function (html) {
        if (html === null || busy()) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        if (fresh) {
          document.getElementById("live").replaceWith(document.adoptNode(fresh));
          wire();
          body.setAttribute("data-refreshed-at", String(Date.now()));
        }
      })
      .catch(function () {});
  }
  window.setInterval(refresh, seconds * 1000);

  function wire() {
    var main = document.getElementById("live");
    // A box the user opened or closed stops the refresh (it would undo
    // that). Only a change from how the page came counts: a <details open>
    // fires "toggle" once after it is parsed, which used to stop the job
    // page's refresh for good whenever the listener was there first.
    main.querySelectorAll("details").forEach(function (d) {
      var initial = d.open;
      d.addEventListener("toggle", function () {
        if (d.open !== initial) d.setAttribute("data-toggled", "");
        else d.removeAttribute("data-toggled");
      });
    });
    var form = main.querySelector("#jobs-form");
    if (!form) return;
    var all = form.querySelector("[data-select-all]");
    var boxes = function () { return form.querySelectorAll("input[name=ids]"); };
    var byFilter = form.querySelector("[data-scope-filter]");
    var count = form.querySelector("[data-selected-count]");
    function update() {
      var n = form.querySelectorAll("input[name=ids]:checked").length;
      if (count) count.textContent = byFilter && byFilter.checked ? "every job matching the filter" : n + " selected";
      form.querySelectorAll("[data-needs-selection]").forEach(function (b) {
        b.disabled = n === 0 && !(byFilter && byFilter.checked);
      });
    }
    if (all) all.addEventListener("change", function () {
      boxes().forEach(function (b) { b.checked = all.checked; });
      update();
    });
    form.addEventListener("change", update);
    update();
  }
  wire();
})();
