/* mss webmail — « Envoyer » sends once: a second click (or Entrée pressed twice) while the page
   is being sent does nothing, and the button says so. The server holds one message per compose
   page anyway (webmail.mail.outbox: a second POST of the same page finds the first). */

const form = document.querySelector("form.compose");

if (form) {
  let sending = false;
  form.addEventListener("submit", (event) => {
    if (event.defaultPrevented) { return; }  // another check kept the page (limit, a save under way)
    if (sending) { event.preventDefault(); return; }
    sending = true;
    const button = event.submitter;
    if (button && button.id === "send") {
      button.setAttribute("aria-disabled", "true");
      button.classList.add("is-busy");
      button.textContent = "Envoi…";
    }
  });
  // Back to the page from the browser's cache (« Précédent »): it may be sent again.
  window.addEventListener("pageshow", (event) => { if (event.persisted) { sending = false; } });
}
