// A certified OpenID provider (panva's oidc-provider) on loopback, for the interoperability tests.
//
//   node provider.mjs --port 9000 --redirect-uri http://127.0.0.1:8000/api/bff/v1/auth/callback \
//     --post-logout-redirect-uri http://127.0.0.1:8000/ \
//     --backchannel-logout-uri http://127.0.0.1:8000/api/bff/v1/auth/backchannel-logout \
//     [--alg PS256] [--access-token-ttl 5] [--rotate-refresh-tokens] [--refuse-userinfo]
//
// One confidential client (client_secret_basic, or --client-auth; authorization code with PKCE,
// refresh tokens;
// RP-initiated and back-channel logout) and the provider's own development sign-in and consent
// pages. Everything not set here is the library's default behaviour.
//
// The provider writes one JSON line per event the tests observe (token grants and revocations,
// userinfo refusals, back-channel logout deliveries) to standard output.
//
// oidc-provider 8.x, the last line that supports Node.js 20 (9.x wants Node.js 22).

import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: options } = parseArgs({
  options: {
    port: { type: 'string' },
    'client-id': { type: 'string', default: 'flows-bff-interop' },
    'client-secret': { type: 'string', default: 'interop-client-secret' },
    'redirect-uri': { type: 'string' },
    'post-logout-redirect-uri': { type: 'string' },
    'backchannel-logout-uri': { type: 'string' },
    // RFC 8707 resource indicator of the flows API, and the audience its access tokens name.
    resource: { type: 'string', default: 'urn:zen:backend' },
    audience: { type: 'string', default: 'zen-backend' },
    // Signs ID tokens, logout tokens and the API's JWT access tokens.
    alg: { type: 'string', default: 'RS256' },
    'access-token-ttl': { type: 'string', default: '3600' },
    // Every refresh spends the refresh token and issues a new one.
    'rotate-refresh-tokens': { type: 'boolean', default: false },
    // The userinfo endpoint refuses every access token (401 invalid_token).
    'refuse-userinfo': { type: 'boolean', default: false },
    // How the client authenticates at the token endpoint; private_key_jwt needs --jwks-uri (the
    // gateway's published client keys, fetched by the provider).
    'client-auth': { type: 'string', default: 'client_secret_basic' },
    'jwks-uri': { type: 'string' },
    // Pushed authorization requests (on by default in the library) become the only way in.
    'require-par': { type: 'boolean', default: false },
  },
});

for (const required of ['port', 'redirect-uri', 'post-logout-redirect-uri', 'backchannel-logout-uri']) {
  if (!options[required]) {
    console.error(`provider.mjs: --${required} is required`);
    process.exit(2);
  }
}

const port = Number(options.port);
const issuer = `http://127.0.0.1:${port}`;
const accessTokenTTL = Number(options['access-token-ttl']);
const { alg } = options;

const USERINFO_PATH = '/me'; // the library's default route

const USERS = {
  alice: {
    name: 'Alice Admin',
    email: 'alice@acme.example',
    email_verified: true,
    zen_tenants: { ten_acme: ['read:delivery-flows', 'write:delivery-flows'] },
  },
};

function report(event, details = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...details })}\n`);
}

function signingKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomUUID(), alg, use: 'sig' };
}

const configuration = {
  clients: [
    {
      client_id: options['client-id'],
      client_secret: options['client-secret'],
      redirect_uris: [options['redirect-uri']],
      post_logout_redirect_uris: [options['post-logout-redirect-uri']],
      backchannel_logout_uri: options['backchannel-logout-uri'],
      // Logout tokens name the provider session (sid), which the ID token carries too.
      backchannel_logout_session_required: true,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: options['client-auth'],
      ...(options['jwks-uri'] ? { jwks_uri: options['jwks-uri'] } : {}),
      id_token_signed_response_alg: alg,
    },
  ],
  jwks: { keys: [signingKey()] },
  enabledJWA: { idTokenSigningAlgValues: [alg] },
  // The tenants claim comes with the profile scope, which the gateway asks for by default.
  claims: {
    acr: null,
    auth_time: null,
    iss: null,
    sid: null,
    openid: ['sub'],
    profile: ['name', 'zen_tenants'],
    email: ['email', 'email_verified'],
  },
  async findAccount(ctx, sub) {
    const user = USERS[sub];
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, ...user };
      },
    };
  },
  // The API's access tokens carry the user's tenants, which the flows backend authorizes with.
  async extraTokenClaims(ctx, token) {
    if (token.kind !== 'AccessToken' || !token.resourceServer) return undefined;
    return { zen_tenants: USERS[token.accountId]?.zen_tenants };
  },
  ttl: { AccessToken: accessTokenTTL },
  features: {
    ...(options['require-par']
      ? { pushedAuthorizationRequests: { requirePushedAuthorizationRequests: true } }
      : {}),
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Left at the provider's defaults: the API's access token is issued only to a token
      // request that names the resource again (RFC 8707 2.2), as the gateway does.
      async getResourceServerInfo(ctx, resourceIndicator) {
        if (resourceIndicator !== options.resource) throw new errors.InvalidTarget();
        return {
          scope: 'read:delivery-flows write:delivery-flows',
          audience: options.audience,
          accessTokenTTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg } },
        };
      },
    },
  },
  ...(options['rotate-refresh-tokens'] ? { rotateRefreshToken: true } : {}),
};

const provider = new Provider(issuer, configuration);

provider.on('grant.success', (ctx) => {
  report('grant.success', {
    grantType: ctx.oidc.params.grant_type,
    // A refresh that spent the refresh token it was given and issued a new one.
    rotated: ctx.oidc.entities.RotatedRefreshToken !== undefined,
  });
});
provider.on('grant.error', (ctx, error) => {
  report('grant.error', { grantType: ctx.oidc.params?.grant_type, error: error.error });
});
provider.on('grant.revoked', (ctx) => {
  // route: "revocation" for a client's token revocation, "end_session_confirm" for a sign-out.
  report('grant.revoked', { route: ctx.oidc.route });
});
provider.on('revocation.error', (ctx, error) => {
  report('revocation.error', { error: error.error, description: error.error_description });
});
provider.on('userinfo.error', (ctx, error) => {
  report('userinfo.error', { error: error.error, description: error.error_description });
});
provider.on('backchannel.success', (ctx, client, accountId, sid) => {
  report('backchannel.success', { clientId: client.clientId, sub: accountId, sid });
});
provider.on('backchannel.error', (ctx, error, client, accountId, sid) => {
  report('backchannel.error', { clientId: client.clientId, sub: accountId, sid, error: String(error) });
});
provider.on('server_error', (ctx, error) => {
  report('server_error', { error: String(error), stack: error.stack });
});

if (options['refuse-userinfo']) {
  provider.use(async (ctx, next) => {
    if (ctx.path !== USERINFO_PATH) {
      await next();
      return;
    }
    report('userinfo.refused');
    ctx.status = 401;
    ctx.set('WWW-Authenticate', 'Bearer error="invalid_token"');
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { error: 'invalid_token', error_description: 'the userinfo endpoint refuses every token' };
  });
}

const server = provider.listen(port, '127.0.0.1', () => {
  report('listening', { issuer });
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
