/* mss webmail — a message's « Plus » menu (mail/_more.html, a <details>): closed by Escape (the
   focus back on « Plus ») and by a click elsewhere, as a menu is. Without this script it opens
   and closes with its own button. Loaded once per page however many messages show it. */

const menus = () => Array.from(document.querySelectorAll("details.more-menu[open]"));

document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") { return; }
  for (const menu of menus()) {
    menu.open = false;
    menu.querySelector("summary").focus();
  }
});

document.addEventListener("click", (event) => {
  for (const menu of menus()) {
    if (!menu.contains(event.target)) { menu.open = false; }
  }
});
