// A real OpenID Connect provider (the `oidc-provider` package) on loopback, for aigw's
// validate-jwt end-to-end tests. tests/oidc_provider.py starts and drives it.
//
//   node tests/oidc/server.mjs --port 8123 --config provider.json --keys keys.json
//
// --config (JSON, written by the Python helper): audience, scopes, access_token_ttl, and the
//   clients, each {client_id, client_secret, claims}; the claims go into its access tokens.
// --keys: the signing keys (private JWKs). Read if the file exists, else generated and written,
//   so a restart on the same files keeps the same keys, as a real provider would.
//
// Client-credentials access tokens are JWTs for the requested resource indicator (default:
// `audience`), signed RS256 unless the token request says otherwise. Test-only knobs, none of
// which a real provider has:
//   header x-test-alg: RS256 | PS256 | ES256 ...    the signing algorithm for this token
//   header x-test-ttl: seconds                      the lifetime of this token
//   header x-test-claims: JSON object               claims set on the signed payload after the
//                                                   provider built it (null removes one)
//   GET  /__test/stats                              request counters and the current kids
//   POST /__test/rotate {"keep_old": bool}          sign with new keys from now on
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    config: { type: 'string' },
    keys: { type: 'string' },
  },
});
if (!args.port || !args.config || !args.keys) {
  console.error('usage: server.mjs --port N --config FILE --keys FILE [--host ADDR]');
  process.exit(2);
}

const config = JSON.parse(fs.readFileSync(args.config, 'utf8'));
const issuer = `http://${args.host}:${args.port}`;
const routes = { jwks: '/jwks', token: '/token' };
const DISCOVERY = '/.well-known/openid-configuration';

// RFC 7638 thumbprint: a stable kid derived from the public key.
function thumbprint(jwk) {
  const members = jwk.kty === 'RSA'
    ? { e: jwk.e, kty: jwk.kty, n: jwk.n }
    : { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y };
  return crypto.createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

function generateKeys() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  return [rsa, ec].map((key) => {
    const jwk = key.export({ format: 'jwk' });
    return { ...jwk, kid: thumbprint(jwk), use: 'sig' };
  });
}

function saveKeys(keys) {
  const tmp = `${args.keys}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ keys }), { mode: 0o600 });
  fs.renameSync(tmp, args.keys);
}

// The first key of each type signs; the ones after it are only published (a rollover).
let keys;
if (fs.existsSync(args.keys)) {
  ({ keys } = JSON.parse(fs.readFileSync(args.keys, 'utf8')));
} else {
  keys = generateKeys();
  saveKeys(keys);
}

// State of the flows that store any (client credentials JWTs store nothing); kept across
// rotations, since every Provider instance of this process shares it.
const store = new Map();

class MemoryAdapter {
  constructor(name) {
    this.name = name;
  }

  key(id) {
    return `${this.name}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(this.key(id), { payload, expiresAt });
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry || entry.expiresAt <= Date.now()) return undefined;
    return entry.payload;
  }

  async findByUserCode() {
    return undefined;
  }

  async findByUid() {
    return undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId() {}
}

const clientClaims = new Map(config.clients.map((c) => [c.client_id, c.claims ?? {}]));
const allScopes = config.scopes.join(' ');

function header(ctx, name) {
  return ctx.get(name) || undefined;
}

// The algorithms the generated keys can sign with: an RSA key and an EC P-256 key.
const SIGNING_ALGS = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256']);

async function resourceServer(ctx, indicator) {
  const alg = header(ctx, 'x-test-alg') ?? 'RS256';
  if (!SIGNING_ALGS.has(alg)) {
    throw new errors.InvalidRequest(`x-test-alg must be one of ${[...SIGNING_ALGS].join(', ')}`);
  }
  const ttl = Number(header(ctx, 'x-test-ttl') ?? config.access_token_ttl);
  if (!Number.isSafeInteger(ttl) || ttl <= 0) {
    throw new errors.InvalidRequest('x-test-ttl must be a positive number of seconds');
  }
  return {
    audience: indicator,
    scope: allScopes,
    accessTokenFormat: 'jwt',
    accessTokenTTL: ttl,
    jwt: { sign: { alg } },
  };
}

function overrideClaims(ctx, _token, jwt) {
  const raw = header(ctx, 'x-test-claims');
  if (!raw) return;
  let claims;
  try {
    claims = JSON.parse(raw);
  } catch {
    throw new errors.InvalidRequest('x-test-claims is not JSON');
  }
  for (const [name, value] of Object.entries(claims)) {
    if (value === null) delete jwt.payload[name];
    else jwt.payload[name] = value;
  }
}

function buildProvider() {
  const provider = new Provider(issuer, {
    adapter: MemoryAdapter,
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: allScopes,
    })),
    scopes: ['openid', ...config.scopes],
    jwks: { keys },
    routes,
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => config.audience,
        getResourceServerInfo: resourceServer,
      },
    },
    extraTokenClaims: async (_ctx, token) => clientClaims.get(token.clientId),
    formats: { customizers: { jwt: overrideClaims } },
    ttl: {
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL
        ?? config.access_token_ttl,
    },
    findAccount: async () => undefined,
  });
  provider.on('server_error', (_ctx, err) => console.error('server_error', err));
  return provider;
}

let handler = buildProvider().callback();
const stats = { jwks_fetches: 0, discovery_fetches: 0, token_requests: 0 };

function signingKids() {
  const first = (kty) => keys.find((k) => k.kty === kty)?.kid;
  return { RSA: first('RSA'), EC: first('EC') };
}

function state() {
  return { ...stats, signing_kids: signingKids(), published_kids: keys.map((k) => k.kid) };
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? JSON.parse(text) : {};
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

// Builds the whole new provider before swapping it in; requests already inside the old one
// finish there.
async function rotate(req, res) {
  const { keep_old: keepOld = true } = await readJson(req);
  const previous = keys;
  keys = [...generateKeys(), ...(keepOld ? previous : [])];
  try {
    handler = buildProvider().callback();
  } catch (err) {
    keys = previous;
    throw err;
  }
  saveKeys(keys);
  reply(res, 200, state());
}

async function control(req, res, path) {
  if (req.method === 'GET' && path === '/__test/stats') return reply(res, 200, state());
  if (req.method === 'POST' && path === '/__test/rotate') return rotate(req, res);
  return reply(res, 404, { error: 'not_found' });
}

const server = http.createServer((req, res) => {
  const path = new URL(req.url, issuer).pathname;
  if (path.startsWith('/__test/')) {
    control(req, res, path).catch((err) => {
      console.error(err);
      reply(res, 500, { error: String(err) });
    });
    return;
  }
  if (path === routes.jwks) stats.jwks_fetches += 1;
  else if (path === DISCOVERY) stats.discovery_fetches += 1;
  else if (path === routes.token) stats.token_requests += 1;
  handler(req, res);
});

server.listen(Number.parseInt(args.port, 10), args.host, () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
process.on('SIGTERM', () => process.exit(0));
