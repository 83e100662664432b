/* mss webmail — the « Message en cours d'envoi… » banner (webmail.mail.undo): counts down the
   seconds before the message leaves, then asks the server until it has, and says so (or why
   not). « Annuler » is the banner's own form: nothing here is needed to cancel. */

const TICK = 1000;

function watch(banner) {
  const url = banner.dataset.status;
  const count = banner.querySelector(".held-count");
  let left = parseInt(banner.dataset.remaining, 10) || 0;
  let retry = banner.dataset.retry === "1";
  const says = (n) => (retry ? "La passerelle ne l’a pas encore pris : nouvel essai dans " + n + " s."
    : "Il part dans " + n + " s.");

  const done = (answer) => {
    const ok = answer.state === "sent";
    banner.classList.remove("flash-info");
    banner.classList.add(ok ? "flash-success" : "flash-error");
    banner.setAttribute("role", ok ? "status" : "alert");
    banner.replaceChildren(answer.message || (ok ? "Message envoyé." : "Le message n’est pas parti."));
    if (answer.draft_url) {
      const link = document.createElement("a");
      link.href = answer.draft_url;
      link.textContent = "Ouvrir le brouillon";
      banner.append(" ", link);
    }
  };

  const ask = async () => {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.status === 404) { banner.remove(); return; }  // cancelled from another tab
      const answer = await response.json();
      if (answer.state === "sent" || answer.state === "failed") { done(answer); return; }
      if (answer.state === "cancelled") { banner.remove(); return; }
      if (answer.state === "held") {
        left = Math.ceil(answer.remaining);
        retry = Boolean(answer.retry);
        count.textContent = left > 0 ? says(left) : "Départ…";
      } else {
        count.textContent = "Remise à la passerelle.";
        const cancel = banner.querySelector("form.held-cancel");
        if (cancel) { cancel.remove(); }
      }
    } catch (e) { /* offline for a moment: ask again */ }
    setTimeout(ask, TICK);
  };

  const tick = () => {
    if (left <= 0) { ask(); return; }
    count.textContent = says(left);
    left -= 1;
    setTimeout(tick, TICK);
  };
  tick();
}

document.querySelectorAll(".held[data-status]").forEach(watch);
