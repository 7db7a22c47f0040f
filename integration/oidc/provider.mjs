// A real OpenID provider (panva's oidc-provider) for registry-gate's
// integration tests. Usage:
//   node provider.mjs serve KEYS_FILE PORT_FILE
//     Serves on 127.0.0.1, a free port (PORT env var, default 0 = any),
//     issuer http://127.0.0.1:PORT; writes the port to PORT_FILE once listening.
//     KEYS_FILE is a private JWKS; made (one RSA key, random kid) when missing.
//   node provider.mjs sign KEYS_FILE < {"header":{...},"claims":{...}}
//     Prints a JWT signed with the first key of KEYS_FILE (tests craft
//     expired or otherwise wrong tokens with the provider's own key).
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const config = JSON.parse(readFileSync(join(here, 'config.json'), 'utf8'));
const [mode, keysFile, portFile] = process.argv.slice(2);

function keys() {
  if (!existsSync(keysFile)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
    writeFileSync(keysFile, JSON.stringify({ keys: [jwk] }));
  }
  return JSON.parse(readFileSync(keysFile, 'utf8'));
}

if (mode === 'sign') {
  const { SignJWT, importJWK } = await import('jose');
  const input = JSON.parse(readFileSync(0, 'utf8'));
  const [jwk] = keys().keys;
  const key = await importJWK(jwk, 'RS256');
  const jwt = await new SignJWT(input.claims)
    .setProtectedHeader({ alg: 'RS256', kid: jwk.kid, typ: 'JWT', ...(input.header || {}) })
    .sign(key);
  process.stdout.write(jwt);
  process.exit(0);
}

if (mode !== 'serve') {
  console.error('usage: provider.mjs serve KEYS_FILE PORT_FILE | sign KEYS_FILE');
  process.exit(2);
}

const { default: Provider } = await import('oidc-provider');
const http = await import('node:http');

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.PORT || 0), '127.0.0.1', resolve));
const port = server.address().port;
const issuer = `http://127.0.0.1:${port}`;

const clients = Object.entries(config.workloads).map(([id, w]) => ({
  client_id: id,
  client_secret: w.secret,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
}));
// The gate's web login. A "native" client: oidc-provider then accepts its
// loopback redirect URI on any port (RFC 8252 §7.3); the gate's port is
// chosen when it starts, after this provider.
clients.push({
    application_type: 'native',
    client_id: 'registry-gate',
    client_secret: 'registry-gate-secret',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/ui/oidc/callback'],
    token_endpoint_auth_method: 'client_secret_basic',
});

const provider = new Provider(issuer, {
  clients,
  jwks: keys(),
  // People: any password logs in (the dev login form); claims from config.json.
  async findAccount(_ctx, id) {
    const person = config.people[id] || { email: `${id}@example.com`, groups: [] };
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, email: person.email, groups: person.groups };
      },
    };
  },
  claims: { openid: ['sub'], profile: ['preferred_username'], email: ['email'], groups: ['groups'] },
  scopes: ['openid', 'profile', 'email', 'groups'],
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // A workload asks for its token with resource=<the registry's audience>.
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => ({
        scope: 'push',
        audience: resource,
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // The CI-like claims of each workload client.
  async extraTokenClaims(_ctx, token) {
    const w = config.workloads[token.clientId];
    return w ? w.claims : undefined;
  },
  pkce: { required: () => true },
  cookies: { keys: ['registry-gate-test-cookie-key'] },
  ttl: { ClientCredentials: 600, AccessToken: 600, IdToken: 600, AuthorizationCode: 60, Session: 3600, Interaction: 600, Grant: 3600 },
});
server.on('request', provider.callback());
writeFileSync(portFile, String(port));
console.log(`oidc-provider listening on ${issuer}`);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
