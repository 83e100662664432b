/* mss webmail — drag one message, or the ticked ones, onto a folder of the side bar to move
   them (HTML5 drag and drop). The request is the list's own "Déplacer" (the form #bulk with
   cible=<folder>: the same server checks, the same "tout" for every message of the view); the
   list is then asked again (fragment of the same URL) and the result said in #list-status.
   The keyboard and no-script way stays the "Déplacer vers…" control of the toolbar. */
import { fragment, parseFragment, post } from "./http.js";

let dragged = null;  // {single: uid or null} while a drag from the list is under way

function moveButton() {
  return document.querySelector("#bulk .move button[formaction]");
}

function say(text, ok) {
  const region = document.getElementById("list-status");
  if (!region) { return; }
  const note = document.createElement("p");
  note.className = "flash " + (ok ? "flash-success" : "flash-error");
  note.textContent = text;
  region.replaceChildren(note);
}

async function refreshList() {
  const list = document.getElementById("liste");
  if (!list || !list.dataset.url) { window.location.reload(); return; }
  const html = await fragment(list.dataset.url);
  const fresh = parseFragment(html).getElementById("liste");
  if (fresh) { list.replaceWith(fresh); }
  document.dispatchEvent(new CustomEvent("mss:list-updated"));
}

document.addEventListener("dragstart", (event) => {
  const row = event.target instanceof Element && event.target.closest(".msg-table tr[draggable=true]");
  if (!row || !moveButton()) { return; }
  const box = row.querySelector('input[name="uid"]');
  const ticked = document.querySelectorAll('input[name="uid"][form="bulk"]:checked').length;
  const tout = document.getElementById("tout");
  const all = tout && tout.checked;
  dragged = { single: box && box.checked ? null : row.dataset.uid };
  const count = dragged.single ? 1 : (all ? Number(document.getElementById("select-banner").dataset.total) : ticked);
  event.dataTransfer.effectAllowed = "move";
  event.dataTransfer.setData("text/plain", count > 1 ? `${count} messages` : "1 message");
  document.body.classList.add("dragging-mail");
});

document.addEventListener("dragend", () => {
  dragged = null;
  document.body.classList.remove("dragging-mail");
  document.querySelectorAll(".drop-over").forEach((el) => el.classList.remove("drop-over"));
});

function target(event) {
  const link = event.target instanceof Element && event.target.closest(".folder-list a[data-folder]");
  if (!link || !dragged || link.getAttribute("aria-current")) { return null; }
  return link;
}

document.addEventListener("dragover", (event) => {
  const link = target(event);
  if (!link) { return; }
  event.preventDefault();
  event.dataTransfer.dropEffect = "move";
  link.classList.add("drop-over");
});

document.addEventListener("dragleave", (event) => {
  const link = target(event);
  if (link && !link.contains(event.relatedTarget)) { link.classList.remove("drop-over"); }
});

document.addEventListener("drop", async (event) => {
  const link = target(event);
  if (!link) { return; }
  event.preventDefault();
  link.classList.remove("drop-over");
  const form = document.getElementById("bulk");
  const data = new FormData(form);
  if (dragged.single) {
    data.delete("uid"); data.delete("tout");
    data.append("uid", dragged.single);
  }
  data.set("cible", link.dataset.folder);
  dragged = null;
  const list = document.getElementById("liste");
  if (list) { list.setAttribute("aria-busy", "true"); }  // js/live.js waits
  try {
    // All the messages of a view ("tout") may take several requests: each one moves what it
    // can in its time and says how many are left; the server finds them again.
    let moved = 0;
    for (let round = 0; round < 200; round += 1) {
      const response = await post(moveButton().getAttribute("formaction"), data, { json: true });
      const answer = await response.json();
      moved += answer.count || 0;
      if (!response.ok || !answer.ok || !answer.remaining) {
        const name = (link.querySelector("span") || link).textContent.trim();
        say(round ? `${moved} messages déplacés vers « ${name} ».` : answer.message,
          response.ok && answer.ok);
        break;
      }
      say(`${moved} messages déplacés, ${answer.remaining} restent : déplacement en cours…`, true);
    }
    if (list) { list.removeAttribute("aria-busy"); }
    await refreshList();
  } catch (error) {
    if (list) { list.removeAttribute("aria-busy"); }
    say("Le déplacement n’a pas pu être fait : rechargez la page et réessayez.", false);
  }
});
