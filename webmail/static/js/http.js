/* mss webmail — the one way modules talk to the server (see DESIGN.md, "The webmail's front end").
   Every POST carries the CSRF token of the page; a fragment request asks the same URL for the
   part of the page it refreshes. */

/** The page's CSRF token (base.html's <meta name="csrf-token">), "" when the page has none. */
export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute("content") || "" : "";
}

/** POST a FormData (or a plain object, sent as a form) with the CSRF token; returns the Response.
    Redirects are followed as a browser would; the caller checks response.ok. ``json``: ask for
    a JSON answer (Accept: application/json) from a route that otherwise redirects. */
export async function post(url, data, { json = false } = {}) {
  let body = data;
  if (!(data instanceof FormData)) {
    body = new FormData();
    for (const [key, value] of Object.entries(data || {})) {
      if (Array.isArray(value)) { value.forEach((v) => body.append(key, v)); }
      else { body.append(key, value); }
    }
  }
  return fetch(url, {
    method: "POST", body, credentials: "same-origin",
    headers: json ? { "X-CSRFToken": csrfToken(), "Accept": "application/json" }
      : { "X-CSRFToken": csrfToken() },
  });
}

/** GET the fragment of ``url`` (the server answers only the part the page refreshes). */
export async function fragment(url) {
  const response = await fetch(url, {
    credentials: "same-origin", headers: { "X-MSS-Fragment": "1" },
  });
  if (!response.ok) { throw new Error("HTTP " + response.status); }
  return response.text();
}

/** Parse an HTML string into nodes (the server's markup, escaped by Jinja). */
export function parseFragment(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  return template.content;
}
