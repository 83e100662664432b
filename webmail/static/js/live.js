/* mss webmail — new mail without reloading (webmail/mail/live.py). The page listens to its
   event stream (EventSource); where it cannot have one (every slot of the server taken, its
   session's stream moved to another page, no EventSource) it polls the same state every
   30 s instead. A state is counts and UIDs only; from it this module keeps the unread counts
   (top bar, "Menu", box switcher, folder list), the page title and the quota gauge up to date,
   and refreshes the Boîte de réception's list with fragment() of its own URL — unless the
   person has ticked messages or is in the middle of something: then a banner offers
   "N nouveaux messages — Afficher". The ticks, the focus and the scroll position survive a
   refresh. Other modules hear "mss:mail-arrived" (js/notify.js) and "mss:list-updated". */
import { fragment, parseFragment } from "./http.js";

const root = document.querySelector("[data-live-poll]");

/** A number from a data attribute, null when absent. */
function num(value) {
  const n = parseInt(value || "", 10);
  return Number.isNaN(n) ? null : n;
}

function unreadLabel(n) { return n + " non " + (n === 1 ? "lu" : "lus"); }

/** Put ``n`` in the count badge inside ``host`` (created or removed as needed). */
function setCount(host, n, className, label) {
  if (!host) { return; }
  let badge = host.querySelector(":scope > ." + className);
  if (!n) { if (badge) { badge.remove(); } return; }
  if (!badge) {
    badge = document.createElement("span");
    badge.className = className;
    host.append(" ", badge);
  }
  badge.textContent = String(n);
  badge.setAttribute("aria-label", label || unreadLabel(n));
}

class Live {
  constructor(el) {
    this.el = el;
    this.boxId = num(el.dataset.liveBox);
    this.pollSeconds = num(el.dataset.livePollSeconds) || 30;
    this.baseline = { uidnext: num(el.dataset.liveUidnext), messages: num(el.dataset.liveMessages),
      unseen: num(el.dataset.liveUnseen) };
    this.seen = new Map();  // box id -> {uidnext, unseen} of the last state
    if (this.baseline.uidnext !== null) {
      this.seen.set(this.boxId, { uidnext: this.baseline.uidnext, unseen: this.baseline.unseen });
    }
    this.pending = null;  // a list change waiting for the person (banner shown)
    this.source = null;
    this.timer = null;
    this.refreshing = false;
  }

  start() {
    statusRegion();
    if (this.el.dataset.liveEvents && window.EventSource) { this.connect(); } else { this.poll(); }
    document.addEventListener("mss:list-updated", () => {
      // Another module asked the list again (a move, a star): it holds what the banner offered.
      if (this.pending && !this.refreshing) {
        const shown = this.pending;
        this.hideBanner();
        this.baseline = { uidnext: shown.uidnext, messages: shown.messages, unseen: shown.unseen };
      }
    });
    document.addEventListener("visibilitychange", () => {
      // The tab the person looks at takes the stream back (one per session: the other polls).
      if (!document.hidden && !this.source && this.el.dataset.liveEvents && window.EventSource) {
        this.connect();
      }
    });
  }

  connect() {
    this.stopPolling();
    const source = new EventSource(this.el.dataset.liveEvents);
    this.source = source;
    // How the page is kept up to date, said on the element (tests, and whoever debugs).
    source.addEventListener("open", () => { this.el.dataset.liveMode = "stream"; });
    source.addEventListener("etat", (event) => this.apply(JSON.parse(event.data)));
    source.addEventListener("fin", (event) => {
      const reason = JSON.parse(event.data).reason;
      if (reason === "duree" || reason === "arret") { return; }  // the browser reconnects
      this.closeSource();
      if (reason === "expiree") { this.expired(); } else { this.poll(); }
    });
    source.addEventListener("error", () => {
      // CLOSED: the server refused the stream (503: no slot; 429; 401; 404): poll instead.
      // CONNECTING: the browser retries by itself (a network error, the end of a stream).
      if (source.readyState === EventSource.CLOSED) { this.closeSource(); this.poll(); }
    });
  }

  closeSource() {
    if (this.source) { this.source.close(); this.source = null; }
  }

  stopPolling() {
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
  }

  /** Poll the cheap state endpoint (STATUS) every 30 s: the fallback when there is no stream. */
  poll() {
    this.stopPolling();
    this.el.dataset.liveMode = "poll";
    this.timer = setTimeout(async () => {
      this.timer = null;
      let response;
      try {
        response = await fetch(this.el.dataset.livePoll, {
          credentials: "same-origin", headers: { Accept: "application/json" } });
      } catch (e) { this.poll(); return; }
      if (response.status === 401) { this.expired(); return; }
      if (response.status === 403 || response.status === 404) { return; }
      if (response.ok) { this.apply(await response.json()); }
      if (!this.source) { this.poll(); }
    }, this.pollSeconds * 1000);
  }

  expired() {
    this.closeSource();
    this.stopPolling();
    this.el.dataset.liveMode = "expired";
    if (document.getElementById("live-expired")) { return; }
    const note = document.createElement("div");
    note.id = "live-expired";
    note.className = "flash flash-error live-expired";
    note.setAttribute("role", "alert");
    note.append("Votre session a expiré après une période d’inactivité : les nouveaux messages ne s’affichent plus. ");
    const link = document.createElement("a");
    link.href = this.el.dataset.liveLogin + "?next=" + encodeURIComponent(location.pathname + location.search);
    link.textContent = "Se reconnecter";
    note.append(link);
    const main = document.querySelector(".mail-main") || document.body;
    main.prepend(note);
  }

  /** One state from the stream or the poll. */
  apply(state) {
    this.counts(state);
    this.quota(state.box.quota);
    this.announce(state);
    this.listChanged(state.box);
  }

  counts(state) {
    const nav = this.el.dataset.liveNav;
    const navLink = document.querySelector('.mainnav a[href="' + nav + '"]');
    setCount(navLink, state.total, "nav-count");
    // "Menu" (phones) shows the sum of the bar's counts, as base.html draws it.
    const sum = Array.from(document.querySelectorAll(".mainnav .nav-count"))
      .reduce((n, badge) => n + (num(badge.textContent) || 0), 0);
    setCount(document.querySelector("#menu > summary"), sum, "nav-count");
    for (const box of state.boxes) {
      setCount(document.querySelector('.box-switch a[data-box="' + box.id + '"]'), box.unseen, "count",
        box.unseen + " non " + (box.unseen === 1 ? "lu" : "lus") + " dans la boîte de réception");
    }
    setCount(document.querySelector('.folder-list a[data-folder="INBOX"]'), state.box.unseen, "count");
    if (this.el.dataset.liveFolder === "INBOX" && document.getElementById("liste")) {
      const rest = document.title.replace(/^\(\d+\) /, "");
      document.title = (state.box.unseen ? "(" + state.box.unseen + ") " : "") + rest;
    }
  }

  quota(q) {
    const gauge = document.getElementById("quota");
    if (!gauge || !q) { return; }
    const meter = gauge.querySelector("meter");
    if (meter) {
      meter.max = q.limit; meter.low = q.low; meter.high = q.high; meter.value = q.value;
      meter.textContent = q.percent + " %";
    }
    gauge.classList.remove("quota-ok", "quota-warn", "quota-full");
    gauge.classList.add("quota-" + q.level);
    const text = gauge.querySelector(".quota-text");
    if (text) { text.textContent = q.text; }
    const note = gauge.querySelector(".quota-note");
    if (note) { note.textContent = q.note; note.hidden = !q.note; }
  }

  /** Tell js/notify.js about arrivals: a box whose UIDNEXT and unread count both went up. */
  announce(state) {
    for (const box of state.boxes) {
      const before = this.seen.get(box.id);
      this.seen.set(box.id, { uidnext: box.uidnext, unseen: box.unseen });
      if (!before || box.uidnext <= before.uidnext || box.unseen <= before.unseen) { continue; }
      const count = Math.min(box.uidnext - before.uidnext, box.unseen - before.unseen);
      document.dispatchEvent(new CustomEvent("mss:mail-arrived", {
        detail: { boxId: box.id, from: before.uidnext, to: box.uidnext, count } }));
    }
  }

  /** The Boîte de réception shown here changed (arrivals, deletions, read elsewhere)? */
  listChanged(box) {
    if (box.id !== this.boxId || this.el.dataset.liveFolder !== "INBOX") { return; }
    const b = this.baseline;
    if (b.uidnext === box.uidnext && b.messages === box.messages && b.unseen === box.unseen) { return; }
    if (!document.getElementById("liste")) { return; }
    if (this.busy()) { this.pending = box; this.showBanner(box); return; }
    this.refresh(box);
  }

  /** Ticked messages, a control of the list in use, a dialog open: not the moment to move the
      rows under the person's hand. */
  busy() {
    if (document.querySelector('input[name="uid"]:checked')) { return true; }
    const active = document.activeElement;
    if (active && active.closest("#bulk, .toolbar, .sorter, .page-size, select, dialog")) { return true; }
    if (document.querySelector("dialog[open], #liste[aria-busy='true']")) { return true; }
    return false;
  }

  newUids(box) {
    const floor = this.baseline.uidnext || 0;
    const shown = new Set(Array.from(document.querySelectorAll("#liste tr[data-uid]"), (r) => num(r.dataset.uid)));
    return (box.new || []).filter((u) => u >= floor && !shown.has(u));
  }

  showBanner(box) {
    let banner = document.getElementById("live-banner");
    const count = this.newUids(box).length;
    const text = count ? (count === 1 ? "1 nouveau message" : count + " nouveaux messages") + " — Afficher"
      : "La liste a changé — Afficher";
    if (!banner) {
      banner = document.createElement("div");
      banner.id = "live-banner";
      banner.className = "live-banner";
      banner.setAttribute("role", "status");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-small live-show";
      button.addEventListener("click", () => {
        const wanted = this.pending;
        this.hideBanner();
        if (wanted) { this.refresh(wanted, true); }
      });
      banner.append(button);
    }
    if (!banner.isConnected) {
      // Above the rows, under the list's toolbar: where the new ones will appear.
      const list = document.getElementById("liste");
      const table = list.querySelector(".msg-table");
      const anchor = (table && table.closest("section")) || list;
      anchor.parentNode.insertBefore(banner, anchor);
    }
    banner.querySelector("button").textContent = text;
  }

  hideBanner() {
    this.pending = null;
    const banner = document.getElementById("live-banner");
    if (banner) { banner.remove(); }
  }

  /** Ask the list again (the same URL, as a fragment) and put it in place, keeping the ticks,
      the focus and what the person was looking at. */
  async refresh(box, asked = false) {
    if (this.refreshing) { this.pending = box; return; }
    this.refreshing = true;
    const fresh = this.newUids(box);
    const before = this.baseline;
    this.baseline = { uidnext: box.uidnext, messages: box.messages, unseen: box.unseen };
    try {
      const list = document.getElementById("liste");
      const url = list.dataset.url || location.href;
      const html = await fragment(url);
      const next = parseFragment(html).getElementById("liste");
      const current = document.getElementById("liste");
      if (!next || !current) { return; }
      // What the person did while the list was asked for (a tick, j/k, a scroll) is what
      // survives: taken now, not when the request left.
      const kept = keep(current);
      current.replaceWith(next);
      restore(next, kept, asked);
      for (const uid of fresh) {
        const row = next.querySelector('tr[data-uid="' + uid + '"]');
        if (row) { row.classList.add("arrived"); }
      }
      document.dispatchEvent(new CustomEvent("mss:list-updated"));
      if (fresh.length) {
        say(fresh.length === 1 ? "1 nouveau message" : fresh.length + " nouveaux messages");
      }
    } catch (e) {
      this.baseline = before;  // try again at the next state
    } finally {
      this.refreshing = false;
      const waiting = this.pending;
      if (waiting && !document.getElementById("live-banner")) { this.pending = null; this.listChanged(waiting); }
    }
  }
}

/** What must survive a refresh: ticked UIDs, the focused control of a row, the first row in
    view and where it was on the screen. */
function keep(list) {
  const ticked = Array.from(list.querySelectorAll('input[name="uid"]:checked'), (b) => b.value);
  const active = document.activeElement;
  let focus = null;
  if (active && list.contains(active)) {
    const row = active.closest("tr[data-uid]");
    focus = row ? { uid: row.dataset.uid, kind: active.matches("input") ? "input" : "a" } : null;
  }
  let anchor = null;
  for (const row of list.querySelectorAll("tr[data-uid]")) {
    const top = row.getBoundingClientRect().top;
    if (top >= 0) { anchor = { uid: row.dataset.uid, top }; break; }
  }
  return { ticked, focus, anchor, scrollY: window.scrollY };
}

function restore(list, kept, asked) {
  for (const uid of kept.ticked) {
    const box = list.querySelector('input[name="uid"][value="' + CSS.escape(uid) + '"]');
    if (box) { box.checked = true; }
  }
  if (kept.focus) {
    const row = list.querySelector('tr[data-uid="' + CSS.escape(kept.focus.uid) + '"]');
    const target = row && row.querySelector(kept.focus.kind === "input" ? 'input[name="uid"]' : "td.col-subject a");
    if (target) { target.focus({ preventScroll: true }); }
  }
  if (asked) { return; }  // "Afficher": the person wants to see the new rows, at the top
  if (kept.scrollY > 0 && kept.anchor) {
    const row = list.querySelector('tr[data-uid="' + CSS.escape(kept.anchor.uid) + '"]');
    if (row) { window.scrollBy(0, row.getBoundingClientRect().top - kept.anchor.top); return; }
  }
  window.scrollTo(0, kept.scrollY);
}

/** Say it to screen readers too: a status region of its own (not to wipe another module's),
    in the page before anything is said in it, as live regions must be. */
function statusRegion() {
  let region = document.getElementById("live-status");
  if (!region) {
    region = document.createElement("div");
    region.id = "live-status";
    region.className = "sr-only";
    region.setAttribute("role", "status");
    (document.querySelector(".mail-main") || document.body).append(region);
  }
  return region;
}

function say(text) { statusRegion().textContent = text; }

if (root) { new Live(root).start(); }
