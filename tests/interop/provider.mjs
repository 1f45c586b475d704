// A real, OpenID Certified provider (oidc-provider 8.8.1) for idgate's interoperability suite.
//
// Environment:
//   PORT               port on 127.0.0.1 (required)
//   REDIRECT_URIS      comma-separated redirect URIs registered for every client (required)
//   POST_LOGOUT_URIS   comma-separated post-logout redirect URIs (optional)
//   KEYS_FILE          JSON file with the private JWKS; created when missing, so a test can rotate keys by
//                      rewriting it and restarting this process (soft: new key first, old kept; hard: old removed)
//   ID_TOKEN_TTL       ID token lifetime in seconds (default 3600)
//   ENC_KEYS_FILE      JSON {"rsa": JWK, "ec": JWK} of public encryption keys (optional): registers the clients
//                      idgate-enc-rsa (RSA-OAEP-256 + A256GCM) and idgate-enc-ec (ECDH-ES + A128CBC-HS256), whose
//                      ID tokens the provider encrypts (features.encryption)
//   BACKCHANNEL_URI    a back-channel logout URI registered for every client (optional): turns on
//                      features.backchannelLogout, so ending a session at the provider POSTs a logout token there
//   CLIENT_JWKS_URI    idgate's {prefix}/jwks (optional): registers idgate-pkjwt, which authenticates with
//                      private_key_jwt signed by the key published there; idgate-par (client_secret_basic) must push
//                      its authorization requests (require_pushed_authorization_requests) and is always registered
//   REQUIRE_PAR        "1": PAR required of every client, as discovery's require_pushed_authorization_requests says
// Resource indicators (RFC 8707) are on for three APIs, for idgate's bearer access (RFC 9068 / RFC 7662): an
// authorization request and token request with `resource=` get an access token for it — a JWT (`at+jwt`, signed with
// the provider's keys) for https://api.idgate.test and https://other.idgate.test, an opaque one, which idgate must
// introspect (features.introspection), for https://opaque.idgate.test. Without `resource` nothing changes.
// DPoP (features.dPoP, RFC 9449) is on, with server nonces required in every proof; the client idgate-dpop is
// registered with dpop_bound_access_tokens (a token request without a proof is refused).
// Prints "listening <issuer>" on stdout once it serves.
import crypto from 'node:crypto';
import fs from 'node:fs';

import Provider, { errors } from 'oidc-provider';

// The provider's start-up notices about its development defaults are expected here; keep the test output clean.
const warn = console.warn;
console.warn = (...args) => { if (!String(args[0]).includes('development-only')) warn(...args); };

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const redirectUris = (process.env.REDIRECT_URIS || '').split(',').filter(Boolean);
const postLogoutUris = (process.env.POST_LOGOUT_URIS || '').split(',').filter(Boolean);
const idTokenTtl = Number(process.env.ID_TOKEN_TTL || 3600);
const keysFile = process.env.KEYS_FILE;
const backchannelUri = process.env.BACKCHANNEL_URI || '';
const clientJwksUri = process.env.CLIENT_JWKS_URI;
const requirePar = process.env.REQUIRE_PAR === '1';
const encKeys = process.env.ENC_KEYS_FILE ? JSON.parse(fs.readFileSync(process.env.ENC_KEYS_FILE, 'utf8')) : null;

function newKeys() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const id = crypto.randomBytes(6).toString('hex');
  return [{ ...rsa, kid: `rsa-${id}`, use: 'sig' }, { ...ec, kid: `ec-${id}`, use: 'sig' }];
}

let keys;
if (keysFile && fs.existsSync(keysFile)) {
  keys = JSON.parse(fs.readFileSync(keysFile, 'utf8')).keys;
} else {
  keys = newKeys();
  if (keysFile) fs.writeFileSync(keysFile, JSON.stringify({ keys }));
}

// Users: one with a non-ASCII name, one without the custom claim.
const users = {
  alice: { name: 'Alice Example', email: 'alice@example.com', roles: ['user', 'admin'] },
  zoe: { name: 'Zoë Ünïcødé 山田', email: 'zoe@example.com', roles: ['user'] },
  bob: { name: 'Bob Plain', email: 'bob@example.com' },
};

const client = (id, alg) => ({
  client_id: id,
  client_secret: `${id}-secret-that-is-long-enough-for-hs256-keys`,
  redirect_uris: redirectUris,
  post_logout_redirect_uris: postLogoutUris,
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: alg,
  ...(backchannelUri ? { backchannel_logout_uri: backchannelUri } : {}),
});

// A client without a secret that signs its client assertions with the key idgate publishes at `jwks_uri`.
const keyed = (id, jwksUri) => {
  const { client_secret: _secret, ...rest } = client(id, 'RS256');
  return { ...rest, token_endpoint_auth_method: 'private_key_jwt', jwks_uri: jwksUri };
};

// A client whose ID tokens the provider encrypts to `jwk` (the public half of idgate's decryption key).
const encrypting = (id, jwk, alg, enc) => ({
  ...client(id, 'RS256'),
  id_token_encrypted_response_alg: alg,
  id_token_encrypted_response_enc: enc,
  jwks: { keys: [{ ...jwk, kid: `${id}-key` }] },
});

// The APIs a client may ask access tokens for (scope `api:read`), and in which format.
const resourceServers = {
  'https://api.idgate.test': 'jwt',
  'https://other.idgate.test': 'jwt',
  'https://opaque.idgate.test': 'opaque',
};

const provider = new Provider(issuer, {
  clients: [
    client('idgate-rs256', 'RS256'),
    client('idgate-es256', 'ES256'),
    client('idgate-ps256', 'PS256'),
    client('idgate-hs256', 'HS256'),
    { ...client('idgate-dpop', 'ES256'), dpop_bound_access_tokens: true },
    { ...client('idgate-par', 'RS256'), require_pushed_authorization_requests: true },
    ...(clientJwksUri ? [keyed('idgate-pkjwt', clientJwksUri)] : []),
    ...(encKeys ? [
      encrypting('idgate-enc-rsa', encKeys.rsa, 'RSA-OAEP-256', 'A256GCM'),
      encrypting('idgate-enc-ec', encKeys.ec, 'ECDH-ES', 'A128CBC-HS256'),
    ] : []),
  ],
  jwks: { keys },
  async findAccount(ctx, id) {
    const login = String(id).toLowerCase();
    const user = users[login] || { name: id, email: `${login}@example.com`, roles: ['user'] };
    return {
      accountId: login,
      async claims() {
        const claims = {
          sub: login,
          name: user.name,
          preferred_username: login,
          email: user.email,
          email_verified: true,
          picture: `https://example.com/avatars/${login}.png`,
        };
        if (user.roles) claims['https://example.com/roles'] = user.roles;
        return claims;
      },
    };
  },
  claims: {
    openid: ['sub', 'https://example.com/roles'],
    profile: ['name', 'preferred_username', 'picture'],
    email: ['email', 'email_verified'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  enabledJWA: {
    idTokenSigningAlgValues: ['HS256', 'RS256', 'PS256', 'ES256'],
    // Not RS256: an RSA DPoP key must pick PS256 from this list.
    dPoPSigningAlgValues: ['ES256', 'PS256'],
  },
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    encryption: { enabled: true },
    backchannelLogout: { enabled: Boolean(backchannelUri) },
    dPoP: { enabled: true, nonceSecret: crypto.randomBytes(32), requireNonce: () => true },
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: requirePar },
    introspection: { enabled: true },
    resourceIndicators: {
      // No `resource` asked for: no resource (the access token is for userinfo only, as before); the token request
      // names the resource again (useGrantedResource stays false).
      enabled: true,
      getResourceServerInfo(ctx, resource) {
        const format = resourceServers[resource];
        if (!format) throw new errors.InvalidTarget();
        return { scope: 'api:read', audience: resource, accessTokenTTL: idTokenTtl, accessTokenFormat: format };
      },
    },
  },
  pkce: { required: () => true },
  ttl: { IdToken: idTokenTtl, AccessToken: idTokenTtl, RefreshToken: 86400, Session: 86400, Grant: 86400, Interaction: 600 },
  // The provider shares the host with idgate (another port): its cookies get names idgate never uses.
  cookies: {
    names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_resume', state: 'op_state' },
    keys: ['interop-cookie-key-0123456789abcdef'],
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
