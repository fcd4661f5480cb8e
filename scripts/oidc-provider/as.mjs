// oidc-provider as a real OAuth 2.1 authorization server in front of keyway's testbed:
// dynamic registration, PKCE required (S256), resource indicators (tokens bound to the
// MCP server as audience), refresh token rotation, introspection for the resource
// server. Consent is answered at once by the middleware below (no person in CI).
//
// DPoP (RFC 9449) is on, as oidc-provider has it by default: a token request with a
// proof gets DPoP-bound access and refresh tokens (introspection names the key,
// `cnf.jkt`, for the resource server to check).
//
// Listens on 127.0.0.1 at a free port and prints one JSON line:
//   {"issuer": ..., "introspection_endpoint": ..., "stats_url": ...}
// The stats URL answers {"grants": {grant_type: count}} of successful token requests.
// env: RS_CLIENT_SECRET  secret of the resource server's introspection client
//      DPOP_NONCE=1      every DPoP proof must carry the server's nonce (§8)
//      ACCESS_TTL=SECS   access token lifetime (default 600)
//      ACCESS_FORMAT=jwt access tokens as JWTs (RFC 9068, signed with the provider's
//                        key, published at its jwks_uri), for keyway's gateway
// The person signed in is the authorization request's login_hint, else interop-user.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const rsSecret = process.env.RS_CLIENT_SECRET;
if (!rsSecret) {
  console.error('as.mjs: RS_CLIENT_SECRET is required');
  process.exit(2);
}
const loopback = new Set(['127.0.0.1', 'localhost', '[::1]']);
const requireNonce = process.env.DPOP_NONCE === '1';
const accessTokenTTL = Number(process.env.ACCESS_TTL || 600);
const accessTokenFormat = process.env.ACCESS_FORMAT === 'jwt' ? 'jwt' : 'opaque';
const grants = {};

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const provider = new Provider(issuer, {
    jwks: { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'k1', use: 'sig', alg: 'RS256' }] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    clients: [{
      client_id: 'keyway-testbed-rs',
      client_secret: rsSecret,
      grant_types: [],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    scopes: ['openid', 'offline_access', 'mcp:tools', 'mcp:admin'],
    responseTypes: ['code'],
    pkce: { required: () => true },
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    async findAccount(ctx, sub) {
      return { accountId: sub, async claims() { return { sub }; } };
    },
    // A refresh token for every client that registered the grant (not only with
    // offline_access and prompt=consent, the library default).
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    rotateRefreshToken: true,
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true, initialAccessToken: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      dPoP: {
        enabled: true,
        nonceSecret: crypto.randomBytes(32),
        requireNonce: () => requireNonce,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => undefined,
        useGrantedResource: async () => false,
        async getResourceServerInfo(ctx, resource) {
          if (!loopback.has(new URL(resource).hostname)) throw new errors.InvalidTarget();
          return { scope: 'mcp:tools mcp:admin', audience: resource, accessTokenTTL, accessTokenFormat };
        },
      },
    },
  });

  // No person: finish every interaction at once, login first, then consent.
  provider.use(async (ctx, next) => {
    if (ctx.method !== 'GET' || !/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    let result;
    if (details.prompt.name === 'login') {
      const hint = details.params.login_hint;
      result = { login: { accountId: /^[\w.@-]{1,64}$/.test(hint || '') ? hint : 'interop-user' } };
    } else {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      const missing = details.prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const grantId = await grant.save();
      result = { consent: details.grantId ? {} : { grantId } };
    }
    ctx.respond = false;
    await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  });

  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params.grant_type;
    grants[type] = (grants[type] || 0) + 1;
  });
  const callback = provider.callback();
  server.on('request', (req, res) => {
    if (req.url === '/interop/stats') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ grants }));
      return;
    }
    callback(req, res);
  });
  console.log(JSON.stringify({
    issuer,
    introspection_endpoint: `${issuer}/token/introspection`,
    stats_url: `${issuer}/interop/stats`,
  }));
});
