// Homeroom interoperability suite: real third-party OIDC software on both sides of the broker.
//
//   upstream OP  = npm oidc-provider 9 (op.mjs, a child process on 127.0.0.1)
//   broker       = the Homeroom binary (HOMEROOM_BIN, default <repo>/target/debug/homeroom)
//   downstream   = npm openid-client 6 as the app; a small cookie-jar HTTP driver as the browser
//
// Run: tests/interop/run.sh   (or, deps installed and binary built: node --test tests/interop/)
// Env: HOMEROOM_BIN (binary), INTEROP_KEEP=1 (keep the temp dir with config, SQLite and logs),
//      INTEROP_VERBOSE=1 (print the child processes' logs even when everything passes).
// Every socket is on 127.0.0.1; every wait is bounded; both children are killed in `after`.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as client from 'openid-client';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const HOMEROOM_BIN = process.env.HOMEROOM_BIN ? path.resolve(process.env.HOMEROOM_BIN) : path.join(REPO, 'target', 'debug', 'homeroom');

const APP_CB = 'http://127.0.0.1:8081/cb'; // nothing listens there: the driver stops at it
const APP_BYE = 'http://127.0.0.1:8081/bye';
const RP_ID = 'interop-rp';
const RP_SECRET = 'interop-secret-123';
const PUBLIC_ID = 'interop-public';
const ALICE = { login: 'alice', password: 'wonderland', email: 'alice@interop.test' };
const START_TIMEOUT_MS = 30_000;
const HTTP_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

// Holds all listeners open until every port is known, so two calls never get the same port.
async function freePorts(n) {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  })));
  const ports = servers.map((srv) => srv.address().port);
  await Promise.all(servers.map((srv) => new Promise((r) => srv.close(r))));
  return ports;
}

const children = [];

function startChild(name, cmd, args, env, logFile) {
  const log = createWriteStream(logFile);
  // NODE_TEST_CONTEXT marks node --test's own children; the peers must not inherit it.
  const childEnv = { ...process.env, ...env };
  delete childEnv.NODE_TEST_CONTEXT;
  for (const [k, v] of Object.entries(childEnv)) if (v === undefined) delete childEnv[k];
  const child = spawn(cmd, args, { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  const rec = { name, child, logFile, exited: null, exitPromise: null };
  rec.exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => { rec.exited = { code, signal }; resolve(rec.exited); });
    child.on('error', (err) => { rec.exited = { code: null, signal: null, error: err }; log.write(`spawn error: ${err.message}\n`); resolve(rec.exited); });
  });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  children.push(rec);
  return rec;
}

async function stopChild(rec) {
  if (!rec.exited && rec.child.pid) {
    rec.child.kill('SIGTERM');
    const timer = new Promise((r) => setTimeout(r, 5000, 'timeout'));
    if ((await Promise.race([rec.exitPromise, timer])) === 'timeout') {
      rec.child.kill('SIGKILL');
      await Promise.race([rec.exitPromise, new Promise((r) => setTimeout(r, 2000))]);
    }
  }
}

// Last resort if the runner dies between before() and after().
process.on('exit', () => {
  for (const rec of children) if (!rec.exited) { try { rec.child.kill('SIGKILL'); } catch { /* gone */ } }
});

async function waitUntilUp(rec, url) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (rec.exited) throw new Error(`${rec.name} exited during start (${JSON.stringify(rec.exited)}); log: ${rec.logFile}\n${await tail(rec.logFile)}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = err.cause?.code || err.message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const alive = !rec.exited;
  await new Promise((r) => setTimeout(r, 300)); // let the log stream catch up
  throw new Error(`${rec.name} (pid ${rec.child.pid}, ${alive ? 'still running' : `exited ${JSON.stringify(rec.exited)}`}) did not answer ${url} within ${START_TIMEOUT_MS} ms (last: ${last}); log: ${rec.logFile}\n${await tail(rec.logFile)}`);
}

async function tail(file, lines = 60) {
  try {
    return (await readFile(file, 'utf8')).split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// ---------------------------------------------------------------------------------------------
// The browser: fetch with redirect: 'manual' and a cookie jar (host-only, path-aware, ports
// shared like a real browser's).
// ---------------------------------------------------------------------------------------------

function assertLoopback(u) {
  const url = new URL(u);
  if (url.hostname !== '127.0.0.1') throw new Error(`refusing to leave 127.0.0.1: ${u}`);
}

function htmlDecode(s) {
  const named = { amp: '&', quot: '"', apos: "'", lt: '<', gt: '>' };
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e) => {
    if (e[0] === '#') return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
    return named[e.toLowerCase()] ?? m;
  });
}

class Browser {
  constructor() {
    this.cookies = []; // { name, value, host, path, expires }
    this.trace = []; // { method, url, status, location }
  }

  cookieHeader(url) {
    const u = new URL(url);
    const now = Date.now();
    return this.cookies
      .filter((c) => c.host === u.hostname && (!c.expires || c.expires > now) && (u.pathname === c.path || u.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`)))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  store(url, res) {
    const u = new URL(url);
    for (const sc of res.headers.getSetCookie()) {
      const [pair, ...attrs] = sc.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let cpath = u.pathname.slice(0, u.pathname.lastIndexOf('/')) || '/';
      let expires = null;
      for (const a of attrs) {
        const [k, ...v] = a.trim().split('=');
        const val = v.join('=');
        if (/^path$/i.test(k) && val.startsWith('/')) cpath = val;
        else if (/^max-age$/i.test(k)) expires = Date.now() + Number(val) * 1000;
        else if (/^expires$/i.test(k) && expires === null) expires = Date.parse(val);
      }
      this.cookies = this.cookies.filter((c) => !(c.name === name && c.host === u.hostname && c.path === cpath));
      if (expires === null || expires > Date.now()) this.cookies.push({ name, value, host: u.hostname, path: cpath, expires });
    }
  }

  cookie(name) {
    return this.cookies.find((c) => c.name === name && (!c.expires || c.expires > Date.now()))?.value;
  }

  async request(url, { method = 'GET', form } = {}) {
    assertLoopback(url);
    const headers = { 'user-agent': 'homeroom-interop/1 (node)' };
    const cookie = this.cookieHeader(url);
    if (cookie) headers.cookie = cookie;
    let body;
    if (form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(form).toString();
    }
    const res = await fetch(url, { method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
    this.store(url, res);
    this.trace.push({ method, url, status: res.status, location: res.headers.get('location') });
    return res;
  }

  traceText(from = 0) {
    return this.trace.slice(from).map((t) => `  ${t.method} ${t.url} -> ${t.status}${t.location ? ` ${t.location}` : ''}`).join('\n');
  }
}

// Follows a front-channel journey from `start` until a URL starting with one of `stopAt`
// (never fetched), clicking Homeroom's provider button and filling the OP's forms on the way.
// Returns { stopped: URL } or { page: { url, status, headers, body } } for anything else.
async function navigate(browser, start, { stopAt, homeroom, op, provider = 'op', user = ALICE }) {
  const seen = { homeroomLogin: 0, opLogin: 0, opConsent: 0, opRequests: 0 };
  let next = { url: start, method: 'GET', form: undefined };
  for (let hop = 0; hop < 30; hop += 1) {
    if (stopAt.some((p) => next.url.startsWith(p))) return { stopped: new URL(next.url), seen };
    const here = new URL(next.url);
    if (here.origin === op) seen.opRequests += 1;
    const res = await browser.request(next.url, next);
    if (res.status >= 300 && res.status < 400) {
      await res.arrayBuffer();
      const loc = res.headers.get('location');
      if (!loc) throw new Error(`redirect without Location at ${next.url}`);
      next = { url: new URL(loc, next.url).href, method: 'GET' };
      continue;
    }
    const body = await res.text();
    if (res.status === 200 && here.origin === homeroom && here.pathname === '/login') {
      seen.homeroomLogin += 1;
      const links = [...body.matchAll(/<a\s+class="button"\s+href="([^"]+)"/g)].map((m) => htmlDecode(m[1]));
      const link = links.find((h) => new URL(h, here).searchParams.get('provider') === provider);
      if (!link) throw new Error(`no provider button for ${provider} on Homeroom's login page: ${body.slice(0, 800)}`);
      next = { url: new URL(link, here).href, method: 'GET' };
      continue;
    }
    if (res.status === 200 && here.origin === op && here.pathname.startsWith('/interaction/')) {
      const form = /<form\s+method="post"\s+action="([^"]+)"[^>]*>([\s\S]*?)<\/form>/i.exec(body);
      if (form && /type="password"/i.test(form[2])) {
        seen.opLogin += 1;
        next = { url: new URL(htmlDecode(form[1]), here).href, method: 'POST', form: { login: user.login, password: user.password } };
        continue;
      }
      if (form && /\/confirm$/.test(form[1])) {
        seen.opConsent += 1;
        next = { url: new URL(htmlDecode(form[1]), here).href, method: 'POST', form: {} };
        continue;
      }
    }
    return { page: { url: next.url, status: res.status, headers: res.headers, body }, seen };
  }
  throw new Error(`more than 30 hops:\n${browser.traceText(mark)}`);
}

// ---------------------------------------------------------------------------------------------
// Helpers for the app side
// ---------------------------------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function decodeJwt(jwt) {
  const [h, p, s] = jwt.split('.');
  return { header: JSON.parse(Buffer.from(h, 'base64url')), payload: JSON.parse(Buffer.from(p, 'base64url')), signingInput: `${h}.${p}`, signature: Buffer.from(s, 'base64url') };
}

// Independent of openid-client: checks a JWS signature with node:crypto against a JWKS.
function jwsValid(jwt, jwks) {
  const { header, signingInput, signature } = decodeJwt(jwt);
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  if (!jwk) throw new Error(`kid ${header.kid} not in JWKS`);
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  if (header.alg === 'RS256') return cryptoVerify('sha256', Buffer.from(signingInput), key, signature);
  if (header.alg === 'ES256') return cryptoVerify('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' }, signature);
  throw new Error(`unexpected alg ${header.alg}`);
}

function pageErrorCode(body) {
  return /data-testid="error-code"[^>]*>([^<]*)</.exec(body)?.[1]?.trim();
}
function pageRefId(body) {
  return /data-testid="ref-id"[^>]*>([^<]*)</.exec(body)?.[1]?.trim();
}

// openid-client raises ResponseBodyError (err.error) for JSON errors, or
// WWWAuthenticateChallengeError (challenges in err.cause) when a 401 carries WWW-Authenticate;
// the JSON body then still says which error it was.
async function oauthErrorOf(err) {
  if (err.error) return { error: err.error, status: err.status };
  if (err.code === 'OAUTH_WWW_AUTHENTICATE_CHALLENGE') {
    const fromChallenge = err.cause?.find((c) => c.parameters?.error)?.parameters.error;
    let fromBody;
    try { fromBody = (await err.response.clone().json()).error; } catch { /* not JSON */ }
    return { error: fromBody ?? fromChallenge, status: err.status ?? err.response?.status, challenge: err.cause };
  }
  return { error: undefined, status: undefined };
}

async function expectOAuthError(promise, code, status) {
  let caught;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught, `expected OAuth error ${code}, but the request succeeded`);
  const got = await oauthErrorOf(caught);
  assert.equal(got.error, code, `expected OAuth error ${code}, got ${got.error ?? caught.code}: ${caught.message}`);
  if (status) assert.equal(got.status, status);
  return got;
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

describe('Homeroom interop (oidc-provider upstream, openid-client downstream)', { timeout: 240_000 }, () => {
  let tmp;
  let failed = false;
  let op; // origin of the OP
  let hr; // origin (issuer) of Homeroom
  let rp; // openid-client Configuration for the confidential app
  let pub; // ... for the public app
  let hrJwks;

  const it = (name, fn) => test(name, { timeout: 60_000 }, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      failed = true;
      throw err;
    }
  });

  const nav = (browser, start, opts = {}) => navigate(browser, start, { stopAt: [APP_CB, APP_BYE], homeroom: hr, op, ...opts });

  // Builds an authorization URL with openid-client (PKCE S256, state, nonce) and drives the browser.
  async function authorize(browser, config, { scope = 'openid email profile offline_access', prompt, maxAge, user } = {}) {
    const pkceCodeVerifier = client.randomPKCECodeVerifier();
    const expectedState = client.randomState();
    const expectedNonce = client.randomNonce();
    const params = {
      redirect_uri: APP_CB,
      scope,
      code_challenge: await client.calculatePKCECodeChallenge(pkceCodeVerifier),
      code_challenge_method: 'S256',
      state: expectedState,
      nonce: expectedNonce,
    };
    if (prompt) params.prompt = prompt;
    if (maxAge !== undefined) params.max_age = String(maxAge);
    const url = client.buildAuthorizationUrl(config, params);
    const result = await nav(browser, url.href, { user });
    const checks = { pkceCodeVerifier, expectedState, expectedNonce, idTokenExpected: true };
    if (maxAge !== undefined) checks.maxAge = maxAge;
    return { ...result, checks };
  }

  function callbackOf(a, browser) {
    assert.ok(a.stopped, `expected a redirect to the app, got HTTP ${a.page?.status} at ${a.page?.url}: ${a.page?.body?.slice(0, 600)}\n${browser.traceText()}`);
    assert.equal(a.stopped.origin + a.stopped.pathname, APP_CB);
    return a.stopped;
  }

  // Full login + code exchange with ID-token verification; returns tokens and claims.
  async function login(browser, config, opts) {
    const a = await authorize(browser, config, opts);
    const cb = callbackOf(a, browser);
    assert.equal(cb.searchParams.get('error'), null, `app got an error: ${cb.href}`);
    assert.ok(cb.searchParams.get('code'), `no code in ${cb.href}`);
    assert.equal(cb.searchParams.get('state'), a.checks.expectedState);
    assert.equal(cb.searchParams.get('iss'), hr, 'RFC 9207 iss in the authorization response');
    const tokens = await client.authorizationCodeGrant(config, cb, a.checks);
    return { a, cb, tokens, claims: tokens.claims() };
  }

  function assertIdToken(tokens, claims, clientId, nonce) {
    assert.ok(tokens.id_token, 'id_token present');
    // openid-client verified signature (enableNonRepudiationChecks), iss, aud, exp, nonce; check again independently.
    assert.equal(jwsValid(tokens.id_token, hrJwks), true, 'ID token signature verifies against Homeroom JWKS');
    const tampered = tokens.id_token.replace(/\.([^.]+)\./, (m, p) => `.${b64url(Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url')), sub: 'mallory' })))}.`);
    assert.equal(jwsValid(tampered, hrJwks), false, 'a tampered ID token must not verify');
    assert.equal(claims.iss, hr);
    assert.equal(claims.aud === clientId || (Array.isArray(claims.aud) && claims.aud.includes(clientId)), true, `aud ${JSON.stringify(claims.aud)}`);
    assert.equal(claims.nonce, nonce);
    assert.equal(typeof claims.sub, 'string');
    assert.ok(claims.sub.length > 0, 'sub present');
    assert.notEqual(claims.sub, 'alice', 'Homeroom issues its own subject, not the upstream one');
    assert.ok(claims.exp > Math.floor(Date.now() / 1000), 'exp in the future');
    if (claims.at_hash) {
      const h = createHash('sha256').update(tokens.access_token).digest();
      assert.equal(claims.at_hash, b64url(h.subarray(0, 16)), 'at_hash matches the access token');
    }
  }

  before(async () => {
    try {
      await start();
    } catch (err) {
      failed = true;
      throw err;
    }
  });

  async function start() {
    if (!existsSync(HOMEROOM_BIN)) throw new Error(`Homeroom binary not found at ${HOMEROOM_BIN} (build it with cargo build -p homeroom or set HOMEROOM_BIN)`);
    tmp = mkdtempSync(path.join(os.tmpdir(), 'homeroom-interop-'));
    const [opPort, hrPort] = await freePorts(2);
    op = `http://127.0.0.1:${opPort}`;
    hr = `http://127.0.0.1:${hrPort}`;

    const opProc = startChild('oidc-provider', process.execPath, [path.join(HERE, 'op.mjs')], {
      OP_PORT: String(opPort),
      OP_EXTRA_REDIRECTS: `${hr}/callback/op`,
      OP_AUTO_CONSENT: '0',
    }, path.join(tmp, 'op.log'));

    const config = `[server]
data_dir = ${JSON.stringify(path.join(tmp, 'data'))}

[store]
sessions = "memory://"

[tenants.district]
name = "Interop District"
domains = ["interop.test"]

[providers.op]
tenant = "district"
kind = "oidc"
display_name = "District OP"
issuer = "${op}"
client_id = "rp-test"
client_secret = "rp-secret"
trust_email = true

[apps.${RP_ID}]
tenant = "district"
name = "Interop RP"
client_secret = "${RP_SECRET}"
redirect_uris = ["${APP_CB}"]
post_logout_redirect_uris = ["${APP_BYE}"]

[apps.${PUBLIC_ID}]
tenant = "district"
token_endpoint_auth_method = "none"
redirect_uris = ["${APP_CB}"]
`;
    const cfgFile = path.join(tmp, 'homeroom.toml');
    writeFileSync(cfgFile, config);
    // Drop any HOMEROOM_* overrides from the caller's environment: the config file is the truth.
    const clean = Object.fromEntries(Object.keys(process.env).filter((k) => k.startsWith('HOMEROOM_')).map((k) => [k, undefined]));
    const hrProc = startChild('homeroom', HOMEROOM_BIN, ['serve', '--config', cfgFile, '--listen', `127.0.0.1:${hrPort}`], {
      ...clean,
      RUST_LOG: process.env.RUST_LOG || 'info,sqlx=warn',
    }, path.join(tmp, 'homeroom.log'));

    await Promise.all([
      waitUntilUp(opProc, `${op}/.well-known/openid-configuration`),
      waitUntilUp(hrProc, `${hr}/.well-known/openid-configuration`),
    ]);

    const opts = { execute: [client.allowInsecureRequests], timeout: HTTP_TIMEOUT_MS / 1000 };
    rp = await client.discovery(new URL(hr), RP_ID, undefined, client.ClientSecretBasic(RP_SECRET), opts);
    pub = await client.discovery(new URL(hr), PUBLIC_ID, undefined, client.None(), opts);
    client.enableNonRepudiationChecks(rp); // verify ID-token JWS signatures against jwks_uri
    client.enableNonRepudiationChecks(pub);
    const jwksRes = await fetch(rp.serverMetadata().jwks_uri, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
    assert.equal(jwksRes.status, 200);
    hrJwks = await jwksRes.json();
    assert.ok(hrJwks.keys.length > 0, 'Homeroom publishes signing keys');
  }

  after(async () => {
    await Promise.all(children.map(stopChild));
    if (!tmp) return;
    if (failed || process.env.INTEROP_VERBOSE === '1') {
      for (const rec of children) process.stderr.write(`\n----- ${rec.name} log (${rec.logFile}), last lines -----\n${await tail(rec.logFile, 80)}\n`);
    }
    if (failed || process.env.INTEROP_KEEP === '1') process.stderr.write(`interop: kept ${tmp}\n`);
    else rmSync(tmp, { recursive: true, force: true });
  });

  it('discovery names Homeroom as issuer and the expected endpoints', () => {
    const md = rp.serverMetadata();
    assert.equal(md.issuer, hr);
    for (const [k, p] of [['authorization_endpoint', '/oauth2/authorize'], ['token_endpoint', '/oauth2/token'], ['userinfo_endpoint', '/oauth2/userinfo'], ['end_session_endpoint', '/oauth2/logout'], ['introspection_endpoint', '/oauth2/introspect'], ['revocation_endpoint', '/oauth2/revoke']]) {
      assert.equal(md[k], `${hr}${p}`, k);
    }
    assert.deepEqual(md.code_challenge_methods_supported, ['S256']);
  });

  it('a. confidential app: full login as alice, verified ID token, userinfo, refresh rotation and reuse detection', async (t) => {
    const browser = new Browser();
    const { a, tokens, claims } = await login(browser, rp);
    assert.equal(a.seen.homeroomLogin, 1, "Homeroom's login page was shown once");
    assert.equal(a.seen.opLogin, 1, "the OP's login form was submitted once");
    assert.equal(a.seen.opConsent, 1, "the OP's consent form was submitted once");
    assert.ok(browser.cookie('hr_session'), 'Homeroom set its SSO session cookie');
    assertIdToken(tokens, claims, RP_ID, a.checks.expectedNonce);
    assert.equal(claims.email, ALICE.email, 'email from the upstream OP');
    assert.equal(claims.email_verified, true, 'trust_email + upstream email_verified=true');
    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    t.diagnostic(`ID token ${decodeJwt(tokens.id_token).header.alg}, claims: ${Object.keys(claims).sort().join(' ')}`);

    const ui = await client.fetchUserInfo(rp, tokens.access_token, claims.sub);
    assert.equal(ui.sub, claims.sub);
    assert.equal(ui.email, ALICE.email);

    const intro = await client.tokenIntrospection(rp, tokens.access_token);
    assert.equal(intro.active, true, 'fresh access token is active');
    assert.equal(intro.sub, claims.sub);
    assert.equal(intro.client_id, RP_ID);

    // Refresh: rotation.
    const rt1 = tokens.refresh_token;
    assert.ok(rt1, 'offline_access gives a refresh token');
    const t2 = await client.refreshTokenGrant(rp, rt1);
    const rt2 = t2.refresh_token;
    assert.ok(rt2, 'refresh returns a new refresh token');
    assert.notEqual(rt2, rt1, 'refresh token rotated');
    assert.ok(t2.access_token && t2.access_token !== tokens.access_token, 'new access token');
    t.diagnostic(`refresh response: ${Object.keys(t2).filter((k) => typeof t2[k] !== 'function').sort().join(' ')}`);
    if (t2.id_token) {
      assert.equal(jwsValid(t2.id_token, hrJwks), true);
      assert.equal(t2.claims().sub, claims.sub, 'same subject after refresh');
    }
    assert.equal((await client.tokenIntrospection(rp, rt2)).active, true, 'rotated refresh token is active');
    assert.equal((await client.fetchUserInfo(rp, t2.access_token, claims.sub)).sub, claims.sub);

    // Reuse of the rotated-out token is refused and revokes the family.
    await expectOAuthError(client.refreshTokenGrant(rp, rt1), 'invalid_grant');
    await expectOAuthError(client.refreshTokenGrant(rp, rt2), 'invalid_grant');
    assert.equal((await client.tokenIntrospection(rp, rt2)).active, false, 'family revoked: rt2 inactive');
  });

  it('b. public app: login with PKCE and no secret, verified ID token, userinfo, refresh rotation', async () => {
    const browser = new Browser();
    const { a, tokens, claims } = await login(browser, pub);
    assert.equal(a.seen.opLogin, 1, "a new browser logs in at the OP");
    assertIdToken(tokens, claims, PUBLIC_ID, a.checks.expectedNonce);
    assert.equal(claims.email, ALICE.email);
    const ui = await client.fetchUserInfo(pub, tokens.access_token, claims.sub);
    assert.equal(ui.email, ALICE.email);

    const rt1 = tokens.refresh_token;
    assert.ok(rt1, 'offline_access gives the public client a refresh token');
    const t2 = await client.refreshTokenGrant(pub, rt1);
    assert.ok(t2.refresh_token && t2.refresh_token !== rt1, 'rotated');
    await expectOAuthError(client.refreshTokenGrant(pub, rt1), 'invalid_grant');
    await expectOAuthError(client.refreshTokenGrant(pub, t2.refresh_token), 'invalid_grant');
  });

  it('c. SSO: a second app in the same browser gets a code with prompt=none, no upstream login', async () => {
    const browser = new Browser();
    const first = await login(browser, rp);
    assert.equal(first.a.seen.opLogin, 1);
    const opHopsBefore = browser.trace.filter((t) => t.url.startsWith(op)).length;

    const second = await authorize(browser, pub, { prompt: 'none' });
    const cb = callbackOf(second, browser);
    assert.equal(cb.searchParams.get('error'), null, `prompt=none refused: ${cb.href}`);
    assert.ok(cb.searchParams.get('code'), 'a code came back');
    assert.equal(cb.searchParams.get('state'), second.checks.expectedState);
    assert.equal(second.seen.opLogin, 0, "the OP's login form did not appear");
    assert.equal(second.seen.homeroomLogin, 0, "Homeroom's login page did not appear");
    assert.equal(browser.trace.filter((t) => t.url.startsWith(op)).length, opHopsBefore, 'no request went upstream');

    const tokens = await client.authorizationCodeGrant(pub, cb, second.checks);
    const claims = tokens.claims();
    assertIdToken(tokens, claims, PUBLIC_ID, second.checks.expectedNonce);
    assert.equal(claims.sub, first.claims.sub, 'same person in both apps');
    if (first.claims.sid && claims.sid) assert.equal(claims.sid, first.claims.sid, 'same SSO session');
  });

  it('c2. prompt=login in a signed-in browser re-authenticates upstream (OP login form shown again)', async () => {
    const browser = new Browser();
    const first = await login(browser, rp, { scope: 'openid' });
    assert.equal(first.a.seen.opLogin, 1);
    const mark = browser.trace.length;
    const again = await login(browser, rp, { scope: 'openid', prompt: 'login' });
    assert.equal(again.claims.sub, first.claims.sub, 'same person');
    assert.equal(again.a.seen.opLogin, 1, `prompt=login must make the upstream OP ask for the password again; hops:\n${browser.traceText(mark)}`);
    assert.ok(again.claims.auth_time >= first.claims.auth_time, 'auth_time does not go back');
  });

  it('c3. max_age=0 in a signed-in browser re-authenticates upstream (OP login form shown again)', async () => {
    // OIDC Core 3.1.2.1: "max_age=0 is equivalent to prompt=login".
    const browser = new Browser();
    const first = await login(browser, rp, { scope: 'openid' });
    assert.equal(first.a.seen.opLogin, 1);
    const mark = browser.trace.length;
    const a = await authorize(browser, rp, { scope: 'openid', maxAge: 0 });
    const cb = callbackOf(a, browser);
    assert.ok(cb.searchParams.get('code'), `no code: ${cb.href}`);
    assert.ok(a.seen.homeroomLogin + a.seen.opRequests > 0, `max_age=0 was answered from the existing SSO session; hops:\n${browser.traceText(mark)}`);
    assert.equal(a.seen.opLogin, 1, `max_age=0 must make the upstream OP ask for the password again; hops:\n${browser.traceText(mark)}`);
    const tokens = await client.authorizationCodeGrant(rp, cb, a.checks);
    assert.equal(typeof tokens.claims().auth_time, 'number', 'auth_time present when max_age was requested');
  });

  it('d1. unregistered redirect_uri: Homeroom error page, no redirect', async () => {
    const browser = new Browser();
    const url = client.buildAuthorizationUrl(rp, {
      redirect_uri: 'http://127.0.0.1:8081/evil', scope: 'openid', state: 's-d1',
      code_challenge: await client.calculatePKCECodeChallenge(client.randomPKCECodeVerifier()), code_challenge_method: 'S256',
    });
    const res = await browser.request(url.href);
    const body = await res.text();
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('location'), null, 'never redirected');
    assert.match(res.headers.get('content-type') || '', /text\/html/);
    const ref = res.headers.get('x-homeroom-ref');
    assert.ok(ref, 'x-homeroom-ref header');
    assert.equal(pageErrorCode(body), 'oauth.redirect_uri_mismatch');
    assert.equal(pageRefId(body), ref, 'page shows the same reference as the header');
    assert.ok(!body.includes('127.0.0.1:8081/evil'), 'the unregistered URI is not offered as a link');
  });

  it('d2. unknown client: Homeroom error page, no redirect', async () => {
    const browser = new Browser();
    const u = new URL(rp.serverMetadata().authorization_endpoint);
    for (const [k, v] of Object.entries({ response_type: 'code', client_id: 'no-such-app', redirect_uri: APP_CB, scope: 'openid', state: 's-d2' })) u.searchParams.set(k, v);
    const res = await browser.request(u.href);
    const body = await res.text();
    assert.equal(res.status, 400);
    assert.equal(res.headers.get('location'), null, 'never redirected');
    assert.ok(res.headers.get('x-homeroom-ref'), 'x-homeroom-ref header');
    assert.equal(pageErrorCode(body), 'oauth.client_unknown');
  });

  it('d3. public client without PKCE: error=invalid_request redirected to the app with state', async () => {
    const browser = new Browser();
    const url = client.buildAuthorizationUrl(pub, { redirect_uri: APP_CB, scope: 'openid', state: 'st-d3', nonce: 'n-d3' });
    assert.equal(url.searchParams.get('code_challenge'), null);
    const res = await browser.request(url.href);
    await res.arrayBuffer();
    assert.ok([302, 303].includes(res.status), `expected a redirect, got ${res.status}`);
    const loc = new URL(res.headers.get('location'));
    assert.equal(loc.origin + loc.pathname, APP_CB);
    assert.equal(loc.searchParams.get('error'), 'invalid_request');
    assert.equal(loc.searchParams.get('state'), 'st-d3');
    assert.equal(loc.searchParams.get('code'), null);
    assert.equal(loc.searchParams.get('iss'), hr);
  });

  it('d4. replayed code: second token request is invalid_grant, tokens of the first are revoked', async () => {
    const browser = new Browser();
    const { a, cb, tokens } = await login(browser, rp, { scope: 'openid email' });
    assert.equal((await client.tokenIntrospection(rp, tokens.access_token)).active, true);
    await expectOAuthError(client.authorizationCodeGrant(rp, cb, a.checks), 'invalid_grant');
    assert.equal((await client.tokenIntrospection(rp, tokens.access_token)).active, false, 'access token from the replayed code revoked');
  });

  it('d5. wrong client secret at the token endpoint: invalid_client', async () => {
    const wrong = await client.discovery(new URL(hr), RP_ID, undefined, client.ClientSecretBasic('not-the-secret'), { execute: [client.allowInsecureRequests], timeout: HTTP_TIMEOUT_MS / 1000 });
    const got = await expectOAuthError(client.refreshTokenGrant(wrong, 'some-refresh-token'), 'invalid_client', 401);
    assert.ok(got.challenge?.some((c) => c.scheme === 'basic'), 'RFC 6749 5.2: 401 with a Basic challenge');
  });

  it('e. RP-initiated logout with id_token_hint -> post_logout_redirect_uri, then prompt=none is login_required', async () => {
    const browser = new Browser();
    const { tokens } = await login(browser, rp, { scope: 'openid' });

    // Control: before logout prompt=none succeeds in this browser.
    const before = await authorize(browser, rp, { prompt: 'none', scope: 'openid' });
    assert.ok(callbackOf(before, browser).searchParams.get('code'), 'prompt=none works while signed in');

    const sessionCookie = browser.cookie('hr_session');
    assert.ok(sessionCookie, 'signed in: hr_session set');
    const endUrl = client.buildEndSessionUrl(rp, { id_token_hint: tokens.id_token, post_logout_redirect_uri: APP_BYE, state: 'bye-state' });
    const res = await browser.request(endUrl.href);
    await res.arrayBuffer();
    assert.equal(res.status, 302);
    const loc = new URL(res.headers.get('location'));
    assert.equal(loc.origin + loc.pathname, APP_BYE);
    assert.equal(loc.searchParams.get('state'), 'bye-state');
    assert.equal(browser.cookie('hr_session'), undefined, 'session cookie cleared');

    const afterLogout = await authorize(browser, rp, { prompt: 'none', scope: 'openid' });
    const cb = callbackOf(afterLogout, browser);
    assert.equal(cb.searchParams.get('error'), 'login_required');
    assert.equal(cb.searchParams.get('state'), afterLogout.checks.expectedState);
    assert.equal(cb.searchParams.get('code'), null);

    // The session is ended server-side too: a browser that kept the old cookie is signed out.
    const stale = new Browser();
    stale.cookies.push({ name: 'hr_session', value: sessionCookie, host: '127.0.0.1', path: '/', expires: null });
    const replay = await authorize(stale, rp, { prompt: 'none', scope: 'openid' });
    assert.equal(callbackOf(replay, stale).searchParams.get('error'), 'login_required', 'old session cookie no longer works');
  });
});
