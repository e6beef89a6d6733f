// op.mjs — the upstream OpenID Provider of the Homeroom interop suite, built on the
// OpenID-certified npm package `oidc-provider` (v9). Started by interop.test.mjs as a child
// process; can also be run by hand:
//
//   OP_PORT=3000 OP_EXTRA_REDIRECTS=http://127.0.0.1:8080/callback/op node tests/interop/op.mjs
//
// Environment
//   OP_PORT             port on 127.0.0.1 (default 3000); the issuer is http://127.0.0.1:OP_PORT
//   OP_EXTRA_REDIRECTS  comma-separated extra redirect URIs for client rp-test (Homeroom's callback)
//   OP_AUTO_CONSENT=1   grant consent without showing the consent page
//
// Clients: rp-test / rp-secret (client_secret_basic, PKCE required).
// Accounts: alice / wonderland, bob / builder.
// Interaction pages (devInteractions off): GET /interaction/:uid shows a login form
// (fields `login`, `password`, POST /interaction/:uid/login) or a consent form
// (POST /interaction/:uid/confirm). GET /healthz answers "ok".
// Every request is logged to stdout as `op: METHOD PATH` so the test log shows the hops.

import http from 'node:http';
import { generateKeyPairSync, timingSafeEqual } from 'node:crypto';
import { parse as parseQs } from 'node:querystring';
import Provider from 'oidc-provider';

const HOST = '127.0.0.1';
const PORT = Number(process.env.OP_PORT || 3000);
const ISSUER = `http://${HOST}:${PORT}`;
const AUTO_CONSENT = process.env.OP_AUTO_CONSENT === '1';

const redirectUris = ['http://127.0.0.1:8081/cb'];
for (const u of (process.env.OP_EXTRA_REDIRECTS || '').split(',').map((s) => s.trim()).filter(Boolean)) {
  redirectUris.push(u);
}

export const ACCOUNTS = {
  alice: {
    password: 'wonderland',
    claims: { email: 'alice@interop.test', email_verified: true, name: 'Alice Liddell', given_name: 'Alice', family_name: 'Liddell', preferred_username: 'alice' },
  },
  bob: {
    password: 'builder',
    claims: { email: 'bob@interop.test', email_verified: true, name: 'Bob Builder', given_name: 'Bob', family_name: 'Builder', preferred_username: 'bob' },
  },
};

function passwordOk(login, password) {
  const acct = Object.hasOwn(ACCOUNTS, login) ? ACCOUNTS[login] : undefined;
  if (!acct) return false;
  const a = Buffer.from(String(password ?? ''));
  const b = Buffer.from(acct.password);
  return a.length === b.length && timingSafeEqual(a, b);
}

function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return { keys: [{ ...rsa, kid: 'op-rs256', use: 'sig', alg: 'RS256' }, { ...ec, kid: 'op-es256', use: 'sig', alg: 'ES256' }] };
}

console.log(`op: starting ${ISSUER} (pid ${process.pid})`);
const provider = new Provider(ISSUER, {
  clients: [
    {
      client_id: 'rp-test',
      client_secret: 'rp-secret',
      redirect_uris: redirectUris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: signingKeys(),
  cookies: { keys: ['interop-cookie-key-1', 'interop-cookie-key-2'] },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile'],
  // Put the scope's claims into the ID token too (Homeroom reads the ID token; it only
  // calls userinfo when use_userinfo = true).
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, sub) {
    if (!Object.hasOwn(ACCOUNTS, sub)) return undefined;
    return { accountId: sub, async claims() { return { sub, ...ACCOUNTS[sub].claims }; } };
  },
  ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
});
provider.on('server_error', (ctx, err) => console.error('op: server_error', err));

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body><h1>${esc(title)}</h1>${body}</body></html>`;
const loginForm = (uid, msg = '') => page('OP sign-in', `${msg}<form method="post" action="/interaction/${esc(uid)}/login">
<input name="login" autocomplete="username"> <input name="password" type="password"> <button type="submit">Sign in</button></form>`);

function readForm(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { data += c; if (data.length > 64 * 1024) { reject(new Error('body too large')); req.destroy(); } });
    req.on('end', () => resolve(parseQs(data)));
    req.on('error', reject);
  });
}

async function grantEverything(details, accountId, clientId, grantId) {
  const grant = grantId ? await provider.Grant.find(grantId) : new provider.Grant({ accountId, clientId });
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  if (details.missingResourceScopes) {
    for (const [indicator, scope] of Object.entries(details.missingResourceScopes)) grant.addResourceScope(indicator, scope.join(' '));
  }
  return grant.save();
}

async function interaction(req, res, uid, action) {
  const send = (status, html) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(html);
  };
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(400, page('Error', '<p>interaction mismatch</p>'));
  const { prompt, params, session, grantId } = details;

  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return send(200, loginForm(uid));
    if (prompt.name === 'consent') {
      if (AUTO_CONSENT) {
        const id = await grantEverything(prompt.details, session.accountId, params.client_id, grantId);
        return provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
      }
      return send(200, page('OP consent', `<p>${esc(params.client_id)} asks for: ${esc(params.scope)}</p>
<form method="post" action="/interaction/${esc(uid)}/confirm"><button type="submit">Allow</button></form>`));
    }
    return send(501, page('Error', `<p>unsupported prompt ${esc(prompt.name)}</p>`));
  }
  if (req.method === 'POST' && action === 'login') {
    const body = await readForm(req);
    if (prompt.name !== 'login') return send(400, page('Error', '<p>not a login prompt</p>'));
    if (!passwordOk(body.login, body.password)) return send(401, loginForm(uid, '<p class="error">invalid login or password</p>'));
    return provider.interactionFinished(req, res, { login: { accountId: String(body.login) } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'confirm') {
    await readForm(req);
    if (prompt.name !== 'consent') return send(400, page('Error', '<p>not a consent prompt</p>'));
    const id = await grantEverything(prompt.details, session.accountId, params.client_id, grantId);
    return provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
  }
  return send(405, page('Error', '<p>method not allowed</p>'));
}

const oidc = provider.callback();
const server = http.createServer(async (req, res) => {
  console.log(`op: ${req.method} ${req.url.split('?')[0]}`);
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm))?\/?(?:\?.*)?$/.exec(req.url);
  if (m) {
    try {
      await interaction(req, res, m[1], m[2]);
    } catch (err) {
      console.error('op: interaction error', err);
      if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`interaction error: ${err.message}\n`);
    }
    return;
  }
  oidc(req, res);
});

server.listen(PORT, HOST, () => {
  console.log(`op: ${ISSUER} ready (pid ${process.pid}); redirect_uris ${redirectUris.join(' ')}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
