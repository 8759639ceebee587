// Trajectory upload with a progress bar: XHR (fetch has no upload progress), JSON answers.
"use strict";
(() => {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const status = document.getElementById("upload-status");
  const bar = document.getElementById("upload-progress");
  const percent = document.getElementById("upload-percent");
  const error = document.getElementById("upload-error");
  const skipped = document.getElementById("upload-skipped");
  const maxBytes = Number(form.dataset.maxBytes);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = form.querySelector("input[type=file]").files[0];
    error.textContent = "";
    skipped.replaceChildren();
    if (!file) { error.textContent = "Choose a file to import."; return; }
    if (file.size > maxBytes) {
      // Same message as the server's 413, without sending the bytes first.
      error.textContent = `The file is ${(file.size / 1e6).toFixed(1)} MB; the limit is ${(maxBytes / 1e6).toFixed(1)} MB.`;
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || window.location.href);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      const p = Math.round((100 * e.loaded) / e.total);
      bar.value = p;
      percent.textContent = p < 100 ? `${p}% uploaded` : "uploaded, importing…";
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { body = { detail: `HTTP ${xhr.status}` }; }
      if (xhr.status === 201 || xhr.status === 202) {
        if ((body.skipped || []).length) {
          for (const line of body.skipped) {
            const li = document.createElement("li");
            li.textContent = `Skipped ${line}`;
            skipped.append(li);
          }
          const go = document.createElement("a");
          go.href = body.redirect;
          go.textContent = "Continue to the imported trajectories";
          skipped.append(go);
          percent.textContent = `imported ${body.trajectories.length} trajectories`;
        } else {
          window.location.assign(body.redirect);
        }
      } else {
        status.hidden = true;
        error.textContent = body.detail || `HTTP ${xhr.status}`;
      }
    });
    xhr.addEventListener("error", () => { status.hidden = true; error.textContent = "The upload failed (network error)."; });
    status.hidden = false;
    bar.value = 0;
    xhr.send(new FormData(form));
  });
})();
