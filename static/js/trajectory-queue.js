// Annotation queue, keyboard first: 1-9 picks a label (then the note has the focus), Ctrl+Enter
// saves and moves on, s skips, u undoes your last. The form posts normally: this only adds keys.
// The form gets data-ready="1" once the keys are live: a key pressed before that does nothing.
"use strict";
(() => {
  const form = document.getElementById("queue-form");
  if (!form) return;
  const note = document.getElementById("queue-note");
  const choices = [...form.querySelectorAll(".queue-choices input[type=radio]")];
  const submit = (action) => {
    const button = form.querySelector(`button[value="${action}"]`);
    if (button) button.click();
  };
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
      return;
    }
    if (event.target.closest("textarea, input[type=text]") || event.ctrlKey || event.metaKey || event.altKey) return;
    if (/^[1-9]$/.test(event.key) && choices[Number(event.key) - 1]) {
      event.preventDefault();
      choices[Number(event.key) - 1].checked = true;
      note.focus();
    } else if (event.key === "s") {
      event.preventDefault();
      submit("skip");
    } else if (event.key === "u") {
      event.preventDefault();
      submit("undo");
    }
  });
  form.dataset.ready = "1";
})();
