// op.mjs: a minimal npm `oidc-provider` (panva) for the surge benchmark's comparison.
// Serves discovery and JWKS (and the rest of the OP) at http://127.0.0.1:${OP_PORT}; one
// confidential client; RS256 + ES256 keys generated at start, as Homeroom publishes both.
// Started and stopped by `surge` (bench/src/procs.rs); binds 127.0.0.1 only.
import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const PORT = Number(process.env.OP_PORT || 3000);
const HOST = '127.0.0.1';
const ISSUER = `http://${HOST}:${PORT}`;

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: 'surge-app',
    client_secret: 'surge-app-secret-0123456789abcdef',
    redirect_uris: ['http://127.0.0.1:9/cb'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [{ ...rsa, kid: 'rs256', use: 'sig', alg: 'RS256' }, { ...ec, kid: 'es256', use: 'sig', alg: 'ES256' }] },
  cookies: { keys: ['surge-bench-cookie-key'] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false }, introspection: { enabled: true }, revocation: { enabled: true } },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'given_name', 'family_name'] },
  async findAccount(ctx, sub) { return { accountId: sub, async claims() { return { sub }; } }; },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const server = http.createServer(provider.callback());
server.keepAliveTimeout = 90_000;
server.listen(PORT, HOST, () => console.log(`oidc-provider ${ISSUER} (pid ${process.pid})`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { server.close(); process.exit(0); });
