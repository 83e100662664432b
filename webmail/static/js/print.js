/* mss webmail — the print page of a message (mail/print.html): its « Imprimer » button, and the
   print dialog opened at once when the page was asked with imprimer=1 (data-auto-print). */

const button = document.getElementById("print-now");
const hint = document.getElementById("print-hint");
if (button) {
  button.hidden = false;
  if (hint) { hint.hidden = true; }
  button.addEventListener("click", () => window.print());
}
if (document.body.dataset.autoPrint === "1") {
  // After the first paint, so that the dialog's preview shows the page as laid out.
  window.addEventListener("load", () => window.setTimeout(() => window.print(), 100), { once: true });
}
