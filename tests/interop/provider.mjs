// A certified OpenID provider (panva's oidc-provider) on loopback, for the interoperability tests.
//
//   node provider.mjs --port 9000 --redirect-uri http://127.0.0.1:8000/api/bff/v1/auth/callback \
//     --post-logout-redirect-uri http://127.0.0.1:8000/ \
//     --backchannel-logout-uri http://127.0.0.1:8000/api/bff/v1/auth/backchannel-logout \
//     [--alg PS256] [--access-token-ttl 5] [--rotate-refresh-tokens] [--refuse-userinfo]
//     [--client-auth private_key_jwt --jwks-uri URL] [--require-par] [--fapi2] [--dpop-nonce]
//     [--client-auth tls_client_auth --mtls-front https://127.0.0.1:9443 --mtls-port 9001
//      --client-ca client-cert.pem --tls-client-auth-subject-dn CN=flows-bff-interop]
//
// One confidential client (client_secret_basic, or --client-auth; authorization code with PKCE,
// refresh tokens;
// RP-initiated and back-channel logout) and the provider's own development sign-in and consent
// pages. Everything not set here is the library's default behaviour.
//
// --fapi2 puts the provider in its FAPI 2.0 profile (features.fapi, profile '2.0') and adds what
// the FAPI 2.0 Security Profile asks of an authorization server that the library leaves to its
// configuration: pushed authorization requests only, DPoP-bound access tokens for the client,
// client authentication by private_key_jwt or tls_client_auth only, with PS256, ES256 or EdDSA.
//
// --mtls-front names a TLS-terminating front (nginx) that proxies to --mtls-port, a second
// listener of this provider: the client certificate the front saw arrives in the
// x-ssl-client-cert header (URL-encoded PEM), believed only on that listener, and the
// provider's metadata names the front's URLs as its mtls_endpoint_aliases (RFC 8705 5).
//
// The provider writes one JSON line per event the tests observe (token grants and the tokens
// they issued, revocations, pushed requests, client assertions, userinfo refusals, its outgoing
// requests such as fetching the client's keys, back-channel logout deliveries) to standard
// output.
//
// oidc-provider 8.x, the last line that supports Node.js 20 (9.x wants Node.js 22).

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
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
    // The FAPI 2.0 profile, and what the FAPI 2.0 Security Profile requires besides (see above).
    fapi2: { type: 'boolean', default: false },
    // DPoP proofs must carry a nonce the provider gave (RFC 9449 8), at every endpoint.
    'dpop-nonce': { type: 'boolean', default: false },
    // tls_client_auth (RFC 8705 2.1) through a TLS-terminating front: its origin, the port it
    // proxies to, the trust anchors of client certificates, and the registered subject.
    'mtls-front': { type: 'string' },
    'mtls-port': { type: 'string' },
    'client-ca': { type: 'string' },
    'tls-client-auth-subject-dn': { type: 'string' },
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
const { alg, fapi2 } = options;
const mtlsFront = options['mtls-front'];
const mtlsPort = mtlsFront ? Number(options['mtls-port']) : undefined;
if (mtlsFront && !(mtlsPort && options['client-ca'] && options['tls-client-auth-subject-dn'])) {
  console.error('provider.mjs: --mtls-front needs --mtls-port, --client-ca and --tls-client-auth-subject-dn');
  process.exit(2);
}

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

// --- tls_client_auth behind the front ---------------------------------------------------------

const CERTIFICATE_HEADER = 'x-ssl-client-cert'; // nginx: $ssl_client_escaped_cert
const clientTrustAnchors = mtlsFront
  ? fs.readFileSync(options['client-ca'], 'utf8')
    .split(/(?=-----BEGIN CERTIFICATE-----)/)
    .filter((pem) => pem.includes('BEGIN CERTIFICATE'))
    .map((pem) => new crypto.X509Certificate(pem))
  : [];

// The certificate the front saw in the TLS handshake; only requests that came through the
// front's listener can carry one.
function getCertificate(ctx) {
  if (ctx.req.socket.localPort !== mtlsPort) return undefined;
  const escaped = ctx.get(CERTIFICATE_HEADER);
  return escaped ? decodeURIComponent(escaped) : undefined;
}

// The front asks for a certificate without checking its chain (ssl_verify_client
// optional_no_ca), so the chain is checked here: issued and signed by one of the client's trust
// anchors (a self-signed certificate is its own), and within its validity.
function certificateAuthorized(ctx) {
  const certificate = new crypto.X509Certificate(getCertificate(ctx));
  const now = Date.now();
  return Date.parse(certificate.validFrom) <= now && now <= Date.parse(certificate.validTo)
    && clientTrustAnchors.some(
      (anchor) => certificate.checkIssued(anchor) && certificate.verify(anchor.publicKey),
    );
}

// Node lists the subject's attributes one a line, most significant first; RFC 4514 (how the
// registered tls_client_auth_subject_dn is written) joins them with commas, least significant
// first. Enough for names without escaped characters.
function certificateSubjectMatches(ctx, property, expected) {
  if (property !== 'tls_client_auth_subject_dn') return false;
  const certificate = new crypto.X509Certificate(getCertificate(ctx));
  return certificate.subject.split('\n').reverse().join(',') === expected;
}

// The endpoints where the client proves itself, at the library's default routes, on the front.
const MTLS_ALIASES = {
  token_endpoint: '/token',
  pushed_authorization_request_endpoint: '/request',
  revocation_endpoint: '/token/revocation',
};

// --- the client's authentication, as the tests observe it ----------------------------------------

// The library's default list, plus tls_client_auth when the front is there; only the two FAPI 2.0
// allows in its profile.
const DEFAULT_CLIENT_AUTH_METHODS = [
  'client_secret_basic', 'client_secret_jwt', 'client_secret_post', 'private_key_jwt', 'none',
];
const MTLS_METHODS = mtlsFront ? ['tls_client_auth'] : [];
const clientAuthMethods = fapi2
  ? ['private_key_jwt', ...MTLS_METHODS]
  : [...DEFAULT_CLIENT_AUTH_METHODS, ...MTLS_METHODS];

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
      ...(mtlsFront ? { tls_client_auth_subject_dn: options['tls-client-auth-subject-dn'] } : {}),
      ...(fapi2 ? { dpop_bound_access_tokens: true } : {}),
      id_token_signed_response_alg: alg,
    },
  ],
  jwks: { keys: [signingKey()] },
  clientAuthMethods,
  enabledJWA: {
    idTokenSigningAlgValues: [alg],
    // FAPI 2.0 Security Profile 5.4: PS256, ES256 or EdDSA (the library also takes HS256, RS256).
    ...(fapi2 ? { clientAuthSigningAlgValues: ['PS256', 'ES256', 'EdDSA'] } : {}),
  },
  ...(mtlsFront
    ? {
      discovery: {
        mtls_endpoint_aliases: Object.fromEntries(
          Object.entries(MTLS_ALIASES).map(([name, path]) => [name, `${mtlsFront}${path}`]),
        ),
      },
    }
    : {}),
  // Records the provider's own outgoing requests (the client's jwks_uri, back-channel logout);
  // the options are the library's defaults.
  httpOptions(url) {
    report('outgoing_request', { url: url.href });
    return {};
  },
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
    ...(options['require-par'] || fapi2
      ? { pushedAuthorizationRequests: { requirePushedAuthorizationRequests: true } }
      : {}),
    ...(fapi2 ? { fapi: { enabled: true, profile: '2.0' }, dPoP: { enabled: true } } : {}),
    ...(options['dpop-nonce']
      ? {
        dPoP: {
          enabled: true,
          nonceSecret: crypto.randomBytes(32),
          requireNonce: () => true,
        },
      }
      : {}),
    ...(mtlsFront
      ? {
        mTLS: {
          enabled: true,
          tlsClientAuth: true,
          getCertificate,
          certificateAuthorized,
          certificateSubjectMatches,
        },
      }
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
if (mtlsFront) {
  // Behind the front, the URL a request was sent to (what a DPoP proof's htu names) is the
  // front's: trust its X-Forwarded-Proto and Host (the library's "Trusting TLS offloading
  // proxies").
  provider.proxy = true;
}

function assertionKid(ctx) {
  const assertion = ctx.oidc?.body?.client_assertion;
  if (typeof assertion !== 'string') return undefined;
  try {
    return JSON.parse(Buffer.from(assertion.split('.')[0], 'base64url')).kid;
  } catch {
    return undefined;
  }
}

// Every client assertion the provider was shown, where, and how it answered.
provider.use(async (ctx, next) => {
  await next();
  const kid = assertionKid(ctx);
  if (kid !== undefined) {
    report('client_assertion', { route: ctx.oidc.route, kid, status: ctx.status });
  }
});

provider.on('grant.success', (ctx) => {
  report('grant.success', {
    grantType: ctx.oidc.params.grant_type,
    // A refresh that spent the refresh token it was given and issued a new one.
    rotated: ctx.oidc.entities.RotatedRefreshToken !== undefined,
  });
  const token = ctx.oidc.entities.AccessToken;
  report('token_response', {
    grantType: ctx.oidc.params.grant_type,
    tokenType: ctx.body?.token_type,
    // RFC 9449 6: the thumbprint of the DPoP key the access token is bound to (its cnf.jkt).
    jkt: token?.jkt ?? null,
    audience: token?.resourceServer?.audience ?? null,
    // The API's access token (a JWT), which the tests present to the backend themselves.
    ...(token?.resourceServer ? { accessToken: ctx.body?.access_token } : {}),
  });
});
provider.on('grant.error', (ctx, error) => {
  report('grant.error', {
    grantType: ctx.oidc.params?.grant_type,
    error: error.error,
    description: error.error_description,
  });
});
provider.on('pushed_authorization_request.success', (ctx) => {
  // The DPoP key the pushed request (and so its code) is bound to (RFC 9449 10.1).
  report('pushed_authorization_request.success', { dpopJkt: ctx.oidc.params.dpop_jkt ?? null });
});
provider.on('pushed_authorization_request.error', (ctx, error) => {
  report('pushed_authorization_request.error', { error: error.error, description: error.error_description });
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

const servers = [
  provider.listen(port, '127.0.0.1', () => {
    report('listening', { issuer });
  }),
];
if (mtlsFront) {
  servers.push(http.createServer(provider.callback()).listen(mtlsPort, '127.0.0.1', () => {
    report('listening', { front: mtlsFront, port: mtlsPort });
  }));
}

function stop() {
  let open = servers.length;
  for (const server of servers) {
    server.close(() => {
      open -= 1;
      if (open === 0) process.exit(0);
    });
    server.closeAllConnections();
  }
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
