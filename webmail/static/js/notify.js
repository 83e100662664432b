/* mss webmail — desktop notifications of new mail (webmail/mail/notify.py). The person chooses
   in Mon compte › Préférences; the browser's permission is asked only when they tick that box
   or press "Activer les notifications du navigateur" on a mail page, never when a page loads.
   A notification says "Nouveau message" and the mailbox; the sender and the subject only with
   the second, explicit setting — then read from the mailbox's list (fragment() of its URL), the
   same rows the page may show: the live stream itself never carries them. */
import { fragment, parseFragment } from "./http.js";

const root = document.querySelector("[data-live-poll]");

function permission() {
  return "Notification" in window ? window.Notification.permission : "unsupported";
}

async function askPermission() {
  if (permission() !== "default") { return permission(); }
  try { return await window.Notification.requestPermission(); } catch (e) { return permission(); }
}

const SAID = {
  granted: "Dans ce navigateur : notifications autorisées.",
  denied: "Dans ce navigateur : notifications bloquées. Autorisez-les dans les réglages du site "
    + "(l’icône à gauche de l’adresse), puis rechargez la page.",
  unsupported: "Ce navigateur n’affiche pas de notifications.",
};

// ---------------------------------------------------------------- Mon compte › Préférences
const choice = document.querySelector("input[data-notify-ask]");
if (choice) {
  const state = document.getElementById("notify-state");
  const details = document.getElementById("notify-details");
  const describe = () => {
    const now = permission();
    state.textContent = SAID[now] || (choice.checked
      ? "Dans ce navigateur : l’autorisation vous sera demandée." : "");
    if (details) { details.disabled = !choice.checked; }
  };
  choice.addEventListener("change", async () => {
    if (choice.checked) { await askPermission(); }  // a click: the browser may ask now
    describe();
  });
  describe();
}

// ---------------------------------------------------------------- mail pages
const enable = document.getElementById("notify-enable");
if (enable && root && root.dataset.notify === "1" && permission() === "default") {
  enable.hidden = false;
  enable.addEventListener("click", async () => {
    const answer = await askPermission();
    if (answer === "granted") { enable.remove(); return; }
    const note = document.createElement("p");
    note.className = "hint notify-note";
    note.textContent = SAID[answer] || "";
    enable.replaceWith(note);
  });
}

/** One notification per arrival whatever the number of open tabs: the first tab to claim the
    box's new UIDNEXT says it (localStorage holds numbers only). */
function claim(boxId, uidnext) {
  const key = "mss-notified-" + boxId;
  try {
    const before = parseInt(localStorage.getItem(key) || "0", 10);
    if (before >= uidnext) { return false; }
    localStorage.setItem(key, String(uidnext));
  } catch (e) { /* storage refused: say it anyway */ }
  return true;
}

/** Sender and subject of the messages from UID ``from`` on, from the mailbox's list. */
async function rowsSince(url, from) {
  try {
    const list = parseFragment(await fragment(url)).getElementById("liste");
    if (!list) { return []; }
    return Array.from(list.querySelectorAll("tr[data-uid]"))
      .filter((row) => parseInt(row.dataset.uid, 10) >= from)
      .map((row) => ({
        sender: (row.querySelector("td.col-who") || row).textContent.trim(),
        subject: (row.querySelector("td.col-subject a") || row).textContent.trim(),
      }));
  } catch (e) { return []; }
}

document.addEventListener("mss:mail-arrived", async (event) => {
  if (!root || root.dataset.notify !== "1" || permission() !== "granted") { return; }
  const { boxId, from, to, count } = event.detail;
  if (!claim(boxId, to)) { return; }
  let boxes = {};
  try { boxes = JSON.parse(root.dataset.liveBoxes || "{}"); } catch (e) { boxes = {}; }
  const box = boxes[String(boxId)] || { name: "", url: root.dataset.liveNav };
  const title = count > 1 ? count + " nouveaux messages" : "Nouveau message";
  let body = box.name;
  if (root.dataset.notifyDetails === "1" && count === 1) {
    // A slow list does not hold the notification back: after 1.5 s it goes without details
    // (data-notify-wait, in ms, lets a test on a loaded machine wait longer).
    const wait = Number(root.dataset.notifyWait) || 1500;
    const late = new Promise((done) => { setTimeout(() => done([]), wait); });
    const found = await Promise.race([rowsSince(box.url, from), late]);
    if (found.length === 1) {
      body = "De : " + found[0].sender + "\nObjet : " + found[0].subject + "\n" + box.name;
    }
  }
  const shown = new window.Notification(title, {
    body, tag: "mss-boite-" + boxId, lang: "fr", icon: root.dataset.liveIcon });
  shown.onclick = () => {
    window.focus();
    if (location.pathname !== box.url) { location.assign(box.url); }
    shown.close();
  };
});
