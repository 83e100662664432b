/* mss webmail — the compose page saves itself into Brouillons while it is written in: a few
   seconds after typing pauses (at most every few seconds while it goes on), at once when an
   attachment is added or removed, and when the page is left. One draft per page: each save
   replaces the previous one (the server appends the new draft, then deletes the old). A form
   nobody touched is never saved. The status line says « Brouillon enregistré à 14:05 » (Paris
   time, given by the server). « Envoyer » waits for a save under way, so that the draft the
   sending removes is the last one. */

import { post } from "./http.js";

const form = document.querySelector("form.compose[data-autosave]");
const PAUSE = 2000;  // ms of quiet typing before a save
const AT_MOST = 8000;  // ms between saves while typing goes on

if (form) {
  const status = document.getElementById("autosave-status");
  const input = form.querySelector('input[type="file"][name="attachments"]');
  const SKIP = new Set(["csrf_token", "compose_id", "draft_uid", "source_uid", "source_folder", "action"]);

  /** What the person wrote and chose, to tell a touched form from an untouched one. */
  const snapshot = () => {
    const parts = [];
    for (const [name, value] of new FormData(form)) {
      if (SKIP.has(name)) { continue; }
      parts.push(name + "=" + (value instanceof File ? value.name + ":" + value.size : value));
    }
    return parts.join("\u0000");
  };

  const initial = snapshot();
  let saved = initial;
  let timer = null;
  let firstChange = 0;
  let running = null;
  let again = false;
  let leaving = false;

  const field = (name) => form.querySelector('input[name="' + name + '"]');
  const dirty = () => { const now = snapshot(); return now !== saved && now !== initial; };

  async function save() {
    clearTimeout(timer);
    timer = null;
    firstChange = 0;
    if (running) { again = true; return running; }
    if (!dirty() || leaving) { return null; }
    const state = snapshot();
    const data = new FormData(form);
    data.set("action", "autosave");
    const sent = input ? Array.from(input.files) : [];
    const keep = data.getAll("keep");  // the kept parts the draft will hold first, in order
    running = (async () => {
      try {
        const response = await post(form.getAttribute("action"), data);
        const answer = await response.json().catch(() => ({}));
        if (!response.ok) {
          status.textContent = answer.error || "Brouillon non enregistré (erreur " + response.status + ").";
          status.classList.add("error");
          return;
        }
        field("draft_uid").value = field("source_uid").value = String(answer.draft_uid);
        field("source_folder").value = answer.source_folder;
        saved = state;
        status.textContent = "Brouillon enregistré à " + answer.saved_at;
        status.classList.remove("error");
        const detail = { answer, sent, keep, stale: false };
        form.dispatchEvent(new CustomEvent("mss:autosaved", { detail }));
        // The kept attachments now stand for the files sent; one removed meanwhile (stale)
        // is still in the draft: save again.
        saved = detail.stale ? "" : snapshot();
        if (detail.stale) { again = true; }
      } catch (e) {
        status.textContent = "Brouillon non enregistré : connexion perdue. Nouvel essai au prochain changement.";
        status.classList.add("error");
      } finally {
        running = null;
        if (again) { again = false; later(0); }
      }
    })();
    return running;
  }

  function later(delay) {
    const now = Date.now();
    if (!firstChange) { firstChange = now; }
    clearTimeout(timer);
    const wait = Math.min(delay, Math.max(0, firstChange + AT_MOST - now));
    timer = setTimeout(save, wait);
  }

  form.addEventListener("input", () => later(PAUSE));
  form.addEventListener("change", () => later(PAUSE));
  form.addEventListener("mss:changed", () => later(300));

  // « Envoyer » or « Enregistrer le brouillon » after a save under way finished.
  form.addEventListener("submit", (event) => {
    if (event.defaultPrevented) { return; }  // stopped by another check: still on the page
    if (!running) { leaving = true; clearTimeout(timer); return; }
    event.preventDefault();
    const submitter = event.submitter;
    running.then(() => form.requestSubmit(submitter || undefined));
  });

  // Hidden (another tab, another app on a phone): save now. Leaving (another page, a closed
  // tab): the last changes go with the page, without waiting for an answer — a second draft
  // of this page that this leaves behind is removed by the next save or by the sending.
  const flush = () => {
    if (leaving || !dirty()) { return; }
    const data = new FormData(form);
    data.set("action", "autosave");
    if (input) { data.delete("attachments"); }  // a beacon carries little; files were saved when added
    navigator.sendBeacon(form.getAttribute("action"), data);
    saved = snapshot();
  };
  window.addEventListener("pagehide", flush);
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "hidden") { save(); } });
}
