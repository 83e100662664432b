// Stand-in for Pro Santé Connect (PSC) in the demo and the tests: panva's oidc-provider
// (OpenID Certified), with PSC's particulars: scope "scope_all", acr "eidas1", the national id
// (8+RPPS / 0+ADELI) in the "SubjectNameID" claim of userinfo and of token introspection.
// mss writes the configuration (mss/psc_standin.py): issuer, TLS pair, signing key, clients,
// the demo professionals. The only code here is the sign-in and consent pages, which every
// deployment of oidc-provider writes itself; the protocol is the library's.
//
//   node provider.mjs CONFIG.json
import { readFileSync } from "node:fs";
import { createServer } from "node:https";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const accounts = new Map(config.accounts.map((a) => [a.national_id, a]));
const SCOPE_ALL = ["SubjectNameID", "SubjectRefPro", "SubjectOrganization", "SubjectRole",
  "given_name", "family_name", "preferred_username"];

const provider = new Provider(config.issuer, {
  // PSC's ID tokens always carry auth_time (oidc-provider only when a client requires it).
  clients: config.clients.map((client) => ({ require_auth_time: true, ...client })),
  jwks: { keys: [config.signing_key] },
  cookies: { keys: config.cookie_keys },
  scopes: ["openid", "offline_access", "scope_all"],
  claims: { openid: ["sub"], scope_all: SCOPE_ALL },
  acrValues: ["eidas1"],
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    introspection: {
      enabled: true,
      // PSC lets a service's own client introspect the tokens presented to it (an LPS's token
      // at the IMAP/SMTP server): mss's client may introspect any token.
      allowedPolicy: async (ctx, client) => config.introspectors.includes(client.clientId),
    },
    revocation: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => { ctx.body = page("Déconnexion",
        `<p>Vous quittez Pro Santé Connect (démonstration).</p>${form}
         <button form="op.logoutForm" value="yes" name="logout" autofocus>Se déconnecter</button>`); },
      postLogoutSuccessSource: async (ctx) => { ctx.body = page("Déconnecté",
        "<p>Vous êtes déconnecté de Pro Santé Connect.</p>"); },
    },
  },
  ttl: {
    // IdToken is a function: oidc-provider accepts only positive numbers, and tests give a
    // negative lifetime for ID tokens already expired (a provider whose clock is behind).
    AccessToken: config.access_token_seconds, AuthorizationCode: 60,
    IdToken: () => config.id_token_seconds ?? 600,
    Interaction: 600, Session: 3600, Grant: 3600, RefreshToken: 8 * 3600,
  },
  findAccount: async (ctx, id) => {
    const a = accounts.get(id);
    if (!a) return undefined;
    return {
      accountId: id,
      claims: async () => ({
        sub: id, SubjectNameID: id, preferred_username: id,
        given_name: a.given_name, family_name: a.family_name,
        SubjectRole: [a.role], SubjectOrganization: a.organisation || "",
        SubjectRefPro: { codeCivilite: a.civility, exercices: [{ codeProfession: a.profession_code }] },
      }),
    };
  },
  // The national id travels with the access token: introspection answers it (PSC's practice).
  extraTokenClaims: async (ctx, token) => (token.accountId
    ? { SubjectNameID: token.accountId, acr: "eidas1" } : undefined),
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed("refresh_token"),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: async (ctx, out) => { ctx.type = "html"; ctx.body = page("Erreur",
    `<p>${escape(out.error)} : ${escape(out.error_description || "")}</p>`); },
});
provider.proxy = false;

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html><html lang="fr"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>${escape(title)} — Pro Santé Connect (démonstration)</title>
<style>body{font-family:system-ui,sans-serif;max-width:26rem;margin:2rem auto;padding:0 1rem;color:#1b2430}
h1{font-size:1.3rem}label{display:block;margin:.8rem 0 .2rem;font-weight:600}
input{width:100%;padding:.6rem;font:inherit;box-sizing:border-box}button{margin-top:1rem;padding:.6rem 1rem;font:inherit;
background:#000091;color:#fff;border:0;border-radius:4px}p.note{color:#5b6777;font-size:.9rem}.err{color:#b3261e}</style>
</head><body><h1>${escape(title)}</h1>${body}
<p class="note">Service de démonstration qui tient lieu de Pro Santé Connect : ne l'utilisez pas pour de vraies données.</p></body></html>`;
}

async function form(ctx) {
  const chunks = [];
  for await (const chunk of ctx.req) {
    chunks.push(chunk);
    if (chunks.reduce((n, c) => n + c.length, 0) > 8192) ctx.throw(413);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

function loginPage(uid, client, error = "") {
  return page("Se connecter avec Pro Santé Connect", `
<p>Le service <strong>${escape(client)}</strong> demande votre identité de professionnel de santé.</p>
${error ? `<p class="err" role="alert">${escape(error)}</p>` : ""}
<form method="post" action="/interaction/${uid}/login" autocomplete="off">
<label for="national_id">Identifiant national (8 + RPPS, ou 0 + ADELI)</label>
<input id="national_id" name="national_id" inputmode="numeric" required autofocus>
<label for="code">Code e-CPS</label>
<input id="code" name="code" type="password" required>
<button type="submit">Se connecter</button></form>`);
}

function consentPage(uid, client, scopes) {
  return page("Autoriser l'accès", `
<p><strong>${escape(client)}</strong> recevra votre identité (${escape(scopes.join(", "))}).</p>
<form method="post" action="/interaction/${uid}/confirm"><button type="submit" autofocus>Autoriser</button></form>
<form method="post" action="/interaction/${uid}/abort"><button type="submit">Refuser</button></form>`);
}

// The sign-in and consent pages (oidc-provider leaves them to the deployment).
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/);
  if (!match) return next();
  ctx.set("Cache-Control", "no-store");
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { uid, prompt, params } = details;
  if (uid !== match[1]) ctx.throw(400, "interaction inconnue");
  const client = await provider.Client.find(params.client_id);
  const name = client?.clientName || params.client_id;
  const step = match[2];
  let result;
  if (!step && ctx.method === "GET") {
    ctx.type = "html";
    ctx.body = prompt.name === "login" ? loginPage(uid, name)
      : consentPage(uid, name, String(params.scope).split(" "));
    return;
  }
  if (ctx.method !== "POST") ctx.throw(405);
  if (step === "login" && prompt.name === "login") {
    const data = await form(ctx);
    const id = (data.get("national_id") || "").trim();
    if (!accounts.has(id) || data.get("code") !== config.code) {
      ctx.type = "html";
      ctx.status = 400;
      ctx.body = loginPage(uid, name, "Identifiant ou code e-CPS incorrect.");
      return;
    }
    result = { login: { accountId: id, acr: "eidas1", amr: ["mfa"] } };
  } else if (step === "confirm" && prompt.name === "consent") {
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(" "));
    }
    result = { consent: { grantId: await grant.save() } };
  } else if (step === "abort") {
    result = { error: "access_denied", error_description: "Refusé par le professionnel" };
  } else {
    ctx.throw(400, "étape inattendue");
  }
  ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result,
    { mergeWithLastSubmission: step !== "login" }));
});

const tls = { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key),
  minVersion: "TLSv1.2" };
createServer(tls, provider.callback()).listen(config.port, config.host, () => {
  console.log(`ready ${config.issuer}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
