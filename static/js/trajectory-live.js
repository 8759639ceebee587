// A trajectory an agent is still writing: poll its row and reload on the newest turn when
// turns arrive or the run ends (the viewer opens on a #turn-N deep link).
(() => {
  const banner = document.getElementById("live-banner");
  if (!banner) return;
  const url = banner.dataset.url;
  const POLL_MS = 2000; // one small API read per viewer every 2 s while the agent runs
  let count = Number(banner.dataset.count);
  const poll = async () => {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) {
        const row = await response.json();
        if (row.turn_count !== count || !row.live) {
          count = row.turn_count;
          window.location.hash = `turn-${Math.max(0, count - 1)}`;
          window.location.reload();
          return;
        }
      }
    } catch (error) {
      // the server is restarting or the network dropped: try again at the next tick
    }
    window.setTimeout(poll, POLL_MS);
  };
  window.setTimeout(poll, POLL_MS);
})();
