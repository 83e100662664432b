/* mss webmail — every form sent by POST is sent once. A double click (or Entrée pressed twice)
   while the answer is on its way would send the request again: a contact added twice shows
   « déjà dans vos contacts », a bulk action finds its messages gone, a setting is saved twice.
   The form is marked busy (aria-busy, the button aria-disabled) and further submissions are
   dropped until a page comes back; the page also comes back from the browser's cache
   (« Précédent »), so the mark is cleared then. Forms whose submission a script handles itself
   (it calls preventDefault: star.js, the live updates) are left alone, and the compose page
   has its own (send-once.js: « Envoyer » reads « Envoi… »). Loaded on every page (base.html). */

const busy = (form, submitter) => {
  form.dataset.sending = "1";
  form.setAttribute("aria-busy", "true");
  if (submitter) { submitter.setAttribute("aria-disabled", "true"); }
};

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || form.matches("form.compose")) { return; }
  const submitter = event.submitter;
  const method = (submitter && submitter.getAttribute("formmethod")) || form.method;
  if (method.toLowerCase() !== "post" || form.target || (submitter && submitter.formTarget)) {
    return;  // a search, or an answer in another window: sending again is harmless
  }
  if (form.dataset.sending === "1") { event.preventDefault(); return; }
  // Marked once the other listeners had their say (a refused confirmation sends nothing).
  setTimeout(() => { if (!event.defaultPrevented) { busy(form, submitter); } });
});

window.addEventListener("pageshow", () => {
  document.querySelectorAll("form[data-sending]").forEach((form) => {
    delete form.dataset.sending;
    form.removeAttribute("aria-busy");
    form.querySelectorAll("[aria-disabled='true']").forEach((b) => b.removeAttribute("aria-disabled"));
  });
});
