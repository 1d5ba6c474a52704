// In-process Docker-Hub-style token server for docker-registry's `auth: token` (like auth.docker.io).
//   GET  /token?service=S&scope=repository:NAME:pull,push[&scope=...][&account=U][&offline_token=true&client_id=C]
//        Basic credentials = that user, no Authorization = anonymous
//   POST /token  form: grant_type=password&username&password | grant_type=refresh_token&refresh_token, + service, scope
// Answers {token, access_token, expires_in, issued_at[, refresh_token]}; bad credentials -> 401 JSON.
// Grants = requested actions ∩ the user's actions ('*' = everything); anonymous gets anonymousActions.
// Tokens are RS256 (or ES256) JWTs whose header carries `kid` (libtrust fingerprint), `x5c`, or both.
import * as crypto from 'crypto';
import * as http from 'http';
import { closeServer, listenLoopback } from './http-util';
import { libtrustKid, selfSignedCert } from './x509';

export interface UserSpec {
  password: string;
  /** pull, push, delete, or '*' */
  actions: string[];
}

export interface TokenServerOptions {
  users: Record<string, UserSpec>;
  /** actions granted to anonymous requests (default ['pull']; [] = none) */
  anonymousActions?: string[];
  issuer?: string; // default auth.docker.io
  service?: string; // default registry.docker.io
  keyRef?: 'kid' | 'x5c' | 'both'; // default kid
  keyType?: 'rsa' | 'ec'; // default rsa (RS256)
  ttlSeconds?: number; // default 300
}

export interface Access {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenRequestRecord {
  time: string;
  method: string;
  url: string;
  userAgent: string;
  /** scheme of the Authorization header, if any */
  auth: string | null;
  /** POST form fields (passwords and tokens replaced by their length) */
  form?: Record<string, string>;
  status: number;
  user: string | null;
  access?: Access[];
}

export interface TokenClaims {
  iss: string;
  sub: string;
  aud: string;
  exp: number;
  nbf: number;
  iat: number;
  jti: string;
  access: Access[];
}

export interface TokenServer {
  /** http://127.0.0.1:PORT */
  url: string;
  /** url + '/token': the registry's auth.token.realm */
  realm: string;
  port: number;
  issuer: string;
  service: string;
  /** PEM of the self-signed signing certificate (the registry's rootcertbundle) */
  certPem: string;
  kid: string;
  /** every request so far, in order */
  requests: TokenRequestRecord[];
  /**
   * How a granted token is written (default: JSON as Docker Hub does). A test sets it to answer in
   * the shapes other token servers use (escaped JSON, a BOM, other field names, text/plain).
   */
  shape?: (fields: Record<string, string | number>) => { contentType: string; text: string };
  /** sign a token with arbitrary claims (for negative tests) */
  sign(claims: object, header?: Record<string, unknown>): string;
  /** check a token's signature and return its claims (undefined if the signature is bad) */
  decode(token: string): TokenClaims | undefined;
  close(): Promise<void>;
}

const b64u = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

function parseScope(s: string): Access | null {
  // type:name:actions; the name may contain ':' (registry host:port prefix), so split at the first and last ':'
  const i = s.indexOf(':');
  const j = s.lastIndexOf(':');
  if (i < 0 || j <= i) return null;
  return { type: s.slice(0, i), name: s.slice(i + 1, j), actions: s.slice(j + 1).split(',').filter(Boolean) };
}

function grant(scopes: string[], allowed: string[]): Access[] {
  const out: Access[] = [];
  for (const sc of scopes) {
    const p = parseScope(sc);
    if (!p) continue;
    let actions: string[];
    if (allowed.includes('*')) actions = p.actions;
    else if (p.type === 'repository') actions = p.actions.filter((a) => allowed.includes(a));
    else actions = [];
    out.push({ type: p.type, name: p.name, actions });
  }
  return out;
}

function reply(res: http.ServerResponse, code: number, obj: object): void {
  const body = JSON.stringify(obj);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const issuer = opts.issuer ?? 'auth.docker.io';
  const service = opts.service ?? 'registry.docker.io';
  const ttl = opts.ttlSeconds ?? 300;
  const anon = opts.anonymousActions ?? ['pull'];
  const keyRef = opts.keyRef ?? 'kid';
  const isEC = opts.keyType === 'ec';
  const { privateKey } = isEC
    ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const certPem = selfSignedCert(privateKey, issuer);
  const cert = new crypto.X509Certificate(certPem);
  const kid = libtrustKid(cert.publicKey);
  const x5c = [cert.raw.toString('base64')];
  const alg = isEC ? 'ES256' : 'RS256';
  const refreshTokens = new Map<string, string>(); // refresh_token -> user
  const requests: TokenRequestRecord[] = [];

  const sign = (claims: object, header?: Record<string, unknown>): string => {
    const h: Record<string, unknown> = header ?? { typ: 'JWT', alg };
    if (!header) {
      if (keyRef === 'kid' || keyRef === 'both') h.kid = kid;
      if (keyRef === 'x5c' || keyRef === 'both') h.x5c = x5c;
    }
    const input = `${b64u(JSON.stringify(h))}.${b64u(JSON.stringify(claims))}`;
    const sig = crypto.sign('sha256', Buffer.from(input), isEC ? { key: privateKey, dsaEncoding: 'ieee-p1363' } : privateKey);
    return `${input}.${b64u(sig)}`;
  };

  const decode = (token: string): TokenClaims | undefined => {
    const [h, c, s] = token.split('.');
    if (!h || !c || !s) return undefined;
    const ok = crypto.verify(
      'sha256',
      Buffer.from(`${h}.${c}`),
      isEC ? { key: cert.publicKey, dsaEncoding: 'ieee-p1363' } : cert.publicKey,
      Buffer.from(s, 'base64url'),
    );
    return ok ? (JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) as TokenClaims) : undefined;
  };

  const checkUser = (name: string | null, pass: string | null): string | null => {
    if (name === null || pass === null) return null;
    const u = Object.prototype.hasOwnProperty.call(opts.users, name) ? opts.users[name] : undefined;
    return u && u.password === pass ? name : null;
  };

  const issue = (res: http.ServerResponse, q: URLSearchParams, user: string | null, rec: TokenRequestRecord, offline: boolean): void => {
    const scopes = q.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    const allowed = user ? opts.users[user].actions : anon;
    const access = grant(scopes, allowed);
    const now = Math.floor(Date.now() / 1000);
    const claims: TokenClaims = {
      iss: issuer,
      sub: user ?? '',
      aud: q.get('service') || service,
      exp: now + ttl,
      nbf: now - 1,
      iat: now,
      jti: crypto.randomBytes(12).toString('hex'),
      access,
    };
    const token = sign(claims);
    const body: Record<string, string | number> = {
      token,
      access_token: token,
      expires_in: ttl,
      issued_at: new Date(now * 1000).toISOString(),
    };
    if (user && offline) {
      const rt = crypto.randomBytes(16).toString('hex');
      refreshTokens.set(rt, user);
      body.refresh_token = rt;
    }
    rec.status = 200;
    rec.user = user;
    rec.access = access;
    const shaped = server.shape?.(body);
    if (!shaped) return reply(res, 200, body);
    res.writeHead(200, { 'Content-Type': shaped.contentType, 'Content-Length': Buffer.byteLength(shaped.text) });
    res.end(shaped.text);
  };

  const srv = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const authz = req.headers.authorization ?? '';
    const rec: TokenRequestRecord = {
      time: new Date().toISOString(),
      method: req.method ?? '',
      url: req.url ?? '',
      userAgent: req.headers['user-agent'] ?? '',
      auth: authz.split(' ')[0] || null,
      status: 0,
      user: null,
    };
    requests.push(rec);
    const fail = (code: number, details: string): void => {
      rec.status = code;
      reply(res, code, { details });
    };
    if (u.pathname !== '/token') return fail(404, 'not found');
    if (req.method === 'GET') {
      let user: string | null = null;
      if (/^basic /i.test(authz)) {
        const dec = Buffer.from(authz.slice(6).trim(), 'base64').toString('utf8');
        const k = dec.indexOf(':');
        user = k < 0 ? null : checkUser(dec.slice(0, k), dec.slice(k + 1));
        if (!user) return fail(401, 'incorrect username or password');
      }
      return issue(res, u.searchParams, user, rec, u.searchParams.get('offline_token') === 'true');
    }
    if (req.method === 'POST') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const f = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        rec.form = {};
        for (const [k, v] of f) rec.form[k] = /password|token/.test(k) ? `<${v.length} chars>` : v;
        let user: string | null;
        const gt = f.get('grant_type');
        if (gt === 'password') {
          user = checkUser(f.get('username'), f.get('password'));
          if (!user) return fail(401, 'incorrect username or password');
        } else if (gt === 'refresh_token') {
          user = refreshTokens.get(f.get('refresh_token') ?? '') ?? null;
          if (!user) return fail(401, 'invalid refresh token');
        } else {
          return fail(400, 'unsupported grant_type');
        }
        return issue(res, f, user, rec, true);
      });
      return;
    }
    fail(405, 'method not allowed');
  });
  const port = await listenLoopback(srv);
  const url = `http://127.0.0.1:${port}`;
  const server: TokenServer = {
    url,
    realm: `${url}/token`,
    port,
    issuer,
    service,
    certPem,
    kid,
    requests,
    sign,
    decode,
    close: () => closeServer(srv),
  };
  return server;
}
