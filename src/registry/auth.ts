/**
 * Registry auth (distribution "Token Authentication Specification" and its OAuth2 form):
 * Bearer challenges, the token endpoint behind the challenge's realm, and token responses.
 *
 * A realm is another host (auth.docker.io) or the registry itself (ghcr, quay). regtape rewrites
 * the realm to its own origin so that token requests pass through it while recording and are
 * answered from fixtures while replaying:
 *   realm="https://auth.docker.io/token"  ->  realm="http://127.0.0.1:8000/__regtape/token/https/auth.docker.io/token"
 */

export const TOKEN_PREFIX = '/__regtape/token/';

/** The proxy path that stands for a realm URL. */
export function realmToPath(realm: string): string | undefined {
  let u: URL;
  try {
    u = new URL(realm);
  } catch {
    return undefined;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return undefined;
  return `${TOKEN_PREFIX}${u.protocol.slice(0, -1)}/${u.host}${u.pathname}${u.search}`;
}

/** The realm URL (without the client's query) that a proxy token path stands for. */
export function pathToRealm(urlPath: string): URL | undefined {
  if (!urlPath.startsWith(TOKEN_PREFIX)) return undefined;
  const m = /^(https?)\/([^/?]+)(\/[^?]*)?(\?.*)?$/.exec(urlPath.slice(TOKEN_PREFIX.length));
  if (!m) return undefined;
  try {
    return new URL(`${m[1]}://${m[2]}${m[3] ?? '/'}${m[4] ?? ''}`);
  } catch {
    return undefined;
  }
}

/**
 * Rewrites only the realm of every Bearer challenge in a WWW-Authenticate value; service, scope and
 * error stay byte for byte. Other schemes (Basic) pass unchanged.
 */
export function rewriteChallengeRealm(header: string, origin: string): string {
  if (!/^\s*bearer\b/i.test(header)) return header;
  return header.replace(/(\brealm\s*=\s*)(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/i, (all, prefix: string, quoted?: string, bare?: string) => {
    const realm = quoted ?? bare ?? '';
    const p = realmToPath(realm);
    return p ? `${prefix}"${origin}${p}"` : all;
  });
}

/**
 * A challenge as replay sends it: a Bearer realm that is not regtape's own token endpoint (a
 * hand-captured document names https://auth.docker.io/token) is pointed at it, so a client fetches its
 * token from the replayer, never from the network. regtape's own realms pass unchanged.
 */
export function ownRealmChallenge(header: string, origin: string): string {
  if (!/^\s*bearer\b/i.test(header)) return header;
  const m = /\brealm\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/i.exec(header);
  const realm = m ? (m[1] ?? m[2] ?? '') : '';
  if (!m || realm.startsWith(origin + TOKEN_PREFIX)) return header;
  return rewriteChallengeRealm(header, origin);
}

/**
 * The path of regtape's token endpoint that a Bearer challenge sends clients to, whichever origin the
 * challenge names: its own (recorded as the origin placeholder) or a foreign realm replay points at itself.
 */
export function challengeTokenPath(header: string): string | undefined {
  if (!/^\s*bearer\b/i.test(header)) return undefined;
  const m = /\brealm\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/i.exec(header);
  if (!m) return undefined;
  let u: URL;
  try {
    u = new URL(m[1] ?? m[2] ?? '');
  } catch {
    return undefined;
  }
  if (u.pathname.startsWith(TOKEN_PREFIX)) return u.pathname;
  return realmToPath(u.origin + u.pathname);
}

/**
 * What identifies a token request: the realm, the service and the set of scopes. Never the
 * credentials, `account`, `client_id`, `grant_type` or `offline_token`: they change per user and client.
 * GET carries the parameters in the query; the OAuth2 POST form in the body (scope space-separated).
 */
export function tokenRequestKey(urlPath: string, query: string, form: string | undefined): string {
  const params = new URLSearchParams(query);
  const formParams = form ? new URLSearchParams(form) : undefined;
  const service = params.get('service') ?? formParams?.get('service') ?? '';
  const scopes = new Set<string>();
  for (const s of params.getAll('scope')) for (const x of s.split(' ')) if (x) scopes.add(x);
  for (const s of formParams?.getAll('scope') ?? []) for (const x of s.split(' ')) if (x) scopes.add(x);
  return `TOKEN ${urlPath} service=${service} scope=${[...scopes].sort().join(' ')}`;
}

export const TOKEN_FIELDS = ['token', 'access_token', 'refresh_token', 'id_token'];

/** What a redacted secret reads as in a fixture. */
export const REDACTED_VALUE = '<redacted>';

/** A token answer regtape could not parse (text/plain, HTML, cut JSON), recorded as this instead of its bytes. */
export function unparsedTokenAnswer(bytes: number): string {
  return `<redacted: a token answer of ${bytes} bytes that regtape could not parse; replay serves a placeholder token>`;
}
/** Whole-body placeholders: this one, and the store's for bodies too large or binary to keep (`<redacted: N bytes ...>`). */
const WHOLE_BODY_REDACTED = /^<redacted: [^>]*>$/;

/** What a replayed token response says: placeholders, issued now, valid for a day. */
export const REPLAY_TOKEN = 'regtape-replay-token';
export const REPLAY_EXPIRES_IN = 86400;

/**
 * A recorded token response made fresh: clients compute expiry as issued_at + expires_in, so a
 * recorded past time would make them fetch a new token before every request. Every token field and
 * every redacted value becomes the placeholder token. A body recorded as a whole-body placeholder
 * (its token answer could not be parsed) is answered with a placeholder token in JSON.
 */
export function freshTokenResponse(recorded: string, now: Date = new Date()): string | undefined {
  const text = recorded.startsWith('\uFEFF') ? recorded.slice(1) : recorded;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    if (!WHOLE_BODY_REDACTED.test(text.trim())) return undefined;
    parsed = { token: REDACTED_VALUE, access_token: REDACTED_VALUE };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  const obj = parsed as Record<string, unknown>;
  let tokens = 0;
  for (const [k, v] of Object.entries(obj)) {
    if (TOKEN_FIELDS.includes(k) || v === REDACTED_VALUE) {
      obj[k] = REPLAY_TOKEN;
      tokens++;
    }
  }
  if (!tokens) return undefined;
  obj.issued_at = now.toISOString();
  obj.expires_in = REPLAY_EXPIRES_IN;
  return JSON.stringify(obj);
}
