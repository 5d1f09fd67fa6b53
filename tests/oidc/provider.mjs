// A real OpenID Provider (panva's oidc-provider) on loopback for the Rust integration tests.
//
//   node tests/oidc/provider.mjs [PORT]      (PORT 0 or absent: an ephemeral port)
//
// Signing keys for RS256, PS256, ES256 and EdDSA are generated at startup (kids `rs256`,
// `ps256`, `es256`, `eddsa`) and published at the jwks_uri. One confidential client may use
// the client_credentials grant to get JWT access tokens (RFC 9068, `typ: at+jwt`) for one of
// four resource indicators, one per signing algorithm; the token's `aud` is the resource.
//
// When ready it prints ONE line of JSON to stdout:
//   {"issuer", "jwks_uri", "token_endpoint", "client_id", "client_secret",
//    "resources": {"RS256": "urn:api:rs256", ...}, "scopes": [...]}
// and then runs until standard input reaches EOF (so a dying parent does not leak it) or it
// gets SIGTERM/SIGINT (run by hand from a terminal, it stops on Ctrl-D; with stdin from
// /dev/null it exits at once). Diagnostics go to stderr.
//
// Plain http on 127.0.0.1 works as it is: oidc-provider (8.x) has no production mode that
// insists on https; it takes an http issuer and serves it without TLS.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

// stdout carries exactly one line, the JSON below: oidc-provider's NOTICEs (console.info)
// and anything else logged go to stderr. Hence the dynamic import, after this.
console.log = console.error;
console.info = console.error;
const { default: Provider, errors } = await import('oidc-provider');

const port = Number.parseInt(process.argv[2] ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`provider.mjs: bad port ${JSON.stringify(process.argv[2])}`);
  process.exit(2);
}

const SCOPES = ['read', 'write', 'admin'];
const CLIENT_ID = 'rust-tests';
const CLIENT_SECRET = crypto.randomBytes(24).toString('base64url');

// One resource indicator (and so one audience) per signing algorithm.
const RESOURCES = {
  RS256: 'urn:api:rs256',
  PS256: 'urn:api:ps256',
  ES256: 'urn:api:es256',
  EdDSA: 'urn:api:eddsa',
};
const ALG_OF_RESOURCE = new Map(Object.entries(RESOURCES).map(([alg, resource]) => [resource, alg]));

function privateJwk(kid, alg, type, options) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const jwks = {
  keys: [
    privateJwk('rs256', 'RS256', 'rsa', { modulusLength: 2048 }),
    privateJwk('ps256', 'PS256', 'rsa', { modulusLength: 2048 }),
    privateJwk('es256', 'ES256', 'ec', { namedCurve: 'P-256' }),
    privateJwk('eddsa', 'EdDSA', 'ed25519', {}),
  ],
};
const KID_OF_ALG = { RS256: 'rs256', PS256: 'ps256', ES256: 'es256', EdDSA: 'eddsa' };

// The issuer names the port, so bind first and build the provider afterwards.
const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks,
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: SCOPES.join(' '),
    },
  ],
  scopes: ['openid', 'offline_access', ...SCOPES],
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  ttl: {
    AccessToken: 3600,
    ClientCredentials: 3600,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // Without a `resource` parameter, the RS256 resource.
      defaultResource: async () => RESOURCES.RS256,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator, _client) => {
        const alg = ALG_OF_RESOURCE.get(resourceIndicator);
        if (!alg) {
          throw new errors.InvalidTarget(`unknown resource indicator ${resourceIndicator}`);
        }
        return {
          scope: SCOPES.join(' '),
          audience: resourceIndicator,
          accessTokenTTL: 3600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg, kid: KID_OF_ALG[alg] } },
        };
      },
    },
  },
});

provider.on('server_error', (_ctx, err) => {
  console.error(`provider.mjs: server_error: ${err?.stack ?? err}`);
});
provider.on('grant.error', (_ctx, err) => {
  console.error(`provider.mjs: token endpoint refused: ${err?.message} (${err?.error_description})`);
});

server.on('request', provider.callback());

// oidc-provider's own discovery document is the source of truth for the endpoints.
const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();

process.stdout.write(`${JSON.stringify({
  issuer: discovery.issuer,
  jwks_uri: discovery.jwks_uri,
  token_endpoint: discovery.token_endpoint,
  client_id: CLIENT_ID,
  client_secret: CLIENT_SECRET,
  resources: RESOURCES,
  scopes: SCOPES,
})}\n`);

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.stdin.on('end', shutdown);
process.stdin.on('close', shutdown);
process.stdin.on('error', shutdown);
process.stdin.resume();
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
