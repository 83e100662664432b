/* mss webmail — "suivi" (IMAP \Flagged) without reloading the page: a star button of the list
   (form "star") or of the read view (form.star-form) is sent with fetch and redrawn from the
   server's answer. Without this script the same buttons submit their form (webmail/mail/bulk.py
   follow()), and so does this script when the request fails. */
import { post } from "./http.js";

function formOf(button) {
  return button.form || button.closest("form");
}

function draw(button, flagged) {
  button.setAttribute("aria-pressed", flagged ? "true" : "false");
  button.name = flagged ? "retirer" : "suivre";
  const glyph = button.querySelector('[aria-hidden="true"]');
  if (glyph) { glyph.textContent = flagged ? "★" : "☆"; }
  if (button.title) { button.title = flagged ? "Ne plus suivre" : "Suivre"; }
  const row = button.closest("tr");
  if (row) { row.classList.toggle("flagged", flagged); }
}

function announce(text) {
  const region = document.getElementById("list-status");
  if (!region) { return; }
  const said = document.createElement("p");
  said.className = "sr-only";
  said.textContent = text;
  region.replaceChildren(said);
}

document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element && event.target.closest("button.star");
  if (!button) { return; }
  const form = formOf(button);
  if (!form) { return; }
  event.preventDefault();
  if (button.dataset.busy === "1") { return; }  // one request at a time per star
  button.dataset.busy = "1";
  const wanted = button.getAttribute("aria-pressed") !== "true";
  const data = new FormData(form);
  data.delete("suivre"); data.delete("retirer");
  data.append(wanted ? "suivre" : "retirer", button.value);
  try {
    const response = await post(form.action, data, { json: true });
    const answer = await response.json();
    if (!response.ok || !answer.ok) { throw new Error(answer.message || "refus"); }
    draw(button, answer.flagged);
    announce(answer.message);
  } catch (error) {
    delete button.dataset.busy;
    form.requestSubmit(button);  // the page's own way: the server says what happened
    return;
  }
  delete button.dataset.busy;
});
