// Jobs list: state and progress of the rows on screen follow the live events of all jobs.
(() => {
  "use strict";
  const live = document.getElementById("jobs-live");
  const rows = new Map([...document.querySelectorAll("tr[data-job-id]")].map((tr) => [Number(tr.dataset.jobId), tr]));
  const label = (s) => s.charAt(0).toUpperCase() + s.slice(1);
  let announcedNew = false;

  function apply(ev) {
    const tr = rows.get(ev.job);
    if (!tr) {
      if (!announcedNew && (ev.kind === "snapshot" || ev.kind === "state")) {
        announcedNew = true;
        live.textContent = "";
        const a = document.createElement("a");
        a.href = location.href; a.textContent = "New jobs: reload";
        live.append(a);
      }
      return;
    }
    if (ev.state) {
      const badge = tr.querySelector("[data-role=state]");
      badge.className = "badge state-" + ev.state;
      badge.textContent = label(ev.state);
      tr.classList.remove("flash"); void tr.offsetWidth; tr.classList.add("flash");
    }
    if (typeof ev.progress === "number") tr.querySelector("[data-role=progress]").value = ev.progress;
  }

  function connect(delay) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/jobs/`);
    ws.onopen = () => { delay = 500; if (!announcedNew) live.textContent = "live"; };
    ws.onmessage = (m) => apply(JSON.parse(m.data));
    ws.onclose = (event) => {
      // 4401: the session ended (logout, expiry); 4403: the role was taken away. Reconnecting would be refused.
      if (event.code === 4401 || event.code === 4403) { live.textContent = "not live: log in again"; return; }
      if (!announcedNew) live.textContent = "reconnecting…";
      setTimeout(() => connect(Math.min(delay * 2, 15000)), delay);
    };
  }
  connect(500);
})();
