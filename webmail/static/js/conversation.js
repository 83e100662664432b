/* mss webmail — a conversation's page (mail/conversation.html): « Tout déplier / Tout replier »,
   and the message frames of a message opened later take their content's height (a frame laid
   out while folded has none). */

const messages = Array.from(document.querySelectorAll("details.conv-msg"));
const tools = document.querySelector(".conv-tools");

function fit(frame) {
  try {
    const doc = frame.contentDocument;
    if (doc && doc.documentElement) {
      frame.style.height = `${doc.documentElement.scrollHeight + 4}px`;
    }
  } catch (error) { /* another origin: keep the default height */ }
}

for (const item of messages) {
  item.addEventListener("toggle", () => {
    if (item.open) { item.querySelectorAll("iframe.msg-frame").forEach(fit); }
  });
}

if (tools && messages.length > 1) {
  tools.hidden = false;
  document.getElementById("conv-open-all").addEventListener("click", () => {
    messages.forEach((item) => { item.open = true; });
  });
  document.getElementById("conv-close-all").addEventListener("click", () => {
    messages.forEach((item, index) => { item.open = index === messages.length - 1; });
  });
}
