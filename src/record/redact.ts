/**
 * Redaction: secrets never reach disk. Applied to every exchange before it is written.
 * Values become fixed, recognisable placeholders. The scheme of an Authorization header is kept:
 * it tells a reviewer which auth mode was in use and is no secret.
 */
import { HeaderList } from '../fixture/model';
import { REDACTED_VALUE, TOKEN_FIELDS, unparsedTokenAnswer } from '../registry/auth';

export const REDACTED = REDACTED_VALUE;

export interface RedactOptions {
  /** More header names to redact. */
  headers?: string[];
  /** More query parameter names to redact in recorded URLs. */
  query?: string[];
  /** More JSON field names (at any depth) to redact in token responses and form fields in request bodies. */
  fields?: string[];
}

const HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'docker-ratelimit-source', 'x-registry-auth', 'x-amz-security-token'];
const KEEP_SCHEME = new Set(['authorization', 'proxy-authorization']);
/** User names and the signatures of pre-signed CDN / object-store URLs (S3, CloudFront, Azure, Docker Hub's `verify=`). */
const QUERY = ['account', 'password', 'username', 'access_token', 'refresh_token', 'token', 'x-amz-signature', 'x-amz-credential', 'x-amz-security-token', 'signature', 'key-pair-id', 'policy', 'sig', 'verify', 'x-goog-signature', 'x-goog-credential'];
/** Redacted where they are named, but no secret to search for elsewhere. */
const NOT_SECRET_VALUES = new Set(['account', 'username']);
const FORM = ['password', 'refresh_token', 'username', 'access_token', 'client_secret', 'assertion'];
/**
 * Keys of a token answer whose string values are no secret and are kept as they came (with
 * `errors`, the registry's error objects). Any other string in a token answer is replaced: a field
 * the redactor does not know is treated as a secret (`accessToken`, `id_token`, `jwt`, ...).
 */
const TOKEN_ANSWER_PUBLIC = new Set(['token_type', 'scope', 'scopes', 'issued_at', 'expires_at', 'expires_in', 'error', 'error_description', 'error_uri', 'errors', 'service']);
/** Key names that always hold secrets, in any spelling (`access_token`, `accessToken`, `Access-Token`). */
const SECRET_KEY = /token|secret|passw|credential|assertion|apikey|signature|cookie|session|jwt|bearer|privatekey/;
const normalizeKey = (k: string): string => k.toLowerCase().replace(/[_\-\s.]/g, '');
const BOM = '\uFEFF';
/** Every JSON string literal in a text (keys and values), escapes included. */
const JSON_STRING = /"(?:[^"\\]|\\.)*"/g;
/** `a=b&c=d`: a form-encoded answer (OAuth servers of old answer so). */
const FORM_TEXT = /^[\w.~%+-]+=[^&\s]*(?:&[\w.~%+-]+=[^&\s]*)*\s*$/;
/** Absolute URLs inside a text (HTML of a redirect, error messages), up to a quote, bracket or space. */
const URL_IN_TEXT = /https?:\/\/[^\s"'<>()]+/g;

type Kind = 'secret' | 'public' | 'unknown';

/** Shaped like a JWT (header.payload.signature, base64url): caught even where no rule named it. */
const JWT = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+/g;

export class Redactor {
  private readonly headers: Set<string>;
  private readonly query: Set<string>;
  private readonly form: Set<string>;
  private readonly jsonFields: Set<string>;

  constructor(opts: RedactOptions = {}) {
    const lower = (xs: string[] | undefined): string[] => (xs ?? []).map((x) => x.toLowerCase());
    this.headers = new Set([...HEADERS, ...lower(opts.headers)]);
    this.query = new Set([...QUERY, ...lower(opts.query)]);
    this.form = new Set([...FORM, ...lower(opts.fields)]);
    this.jsonFields = new Set([...TOKEN_FIELDS, ...(opts.fields ?? [])]);
  }

  redactHeaders(headers: HeaderList): HeaderList {
    return headers.map(([n, v]) => {
      const lower = n.toLowerCase();
      if (!this.headers.has(lower)) return [n, v];
      if (KEEP_SCHEME.has(lower)) {
        const scheme = /^\s*([A-Za-z][A-Za-z0-9-]*)\s+\S/.exec(v);
        return [n, scheme ? `${scheme[1]} ${REDACTED}` : REDACTED];
      }
      return [n, REDACTED];
    });
  }

  /** Replaces the values of secret query parameters, keeping the URL otherwise as it was (`&amp;` too, as in HTML). */
  redactUrl(url: string): string {
    const q = url.indexOf('?');
    if (q < 0) return url;
    return url.slice(0, q + 1) + this.redactPairs(url.slice(q + 1), this.query);
  }

  /** Every absolute URL inside a text (the HTML body of a redirect, an error message): its signature and tokens. */
  redactUrlsIn(text: string): string {
    return text.replace(URL_IN_TEXT, (u) => this.redactUrl(u));
  }

  /** Location, Content-Location and the URLs of Link headers, relative or absolute. */
  redactHeaderUrls(headers: HeaderList): HeaderList {
    return headers.map(([n, v]) => {
      const lower = n.toLowerCase();
      if (lower === 'location' || lower === 'content-location') return [n, this.redactUrl(v)];
      if (lower === 'link') return [n, v.replace(/<([^>]*)>/g, (_all, u: string) => `<${this.redactUrl(u)}>`)];
      return [n, v];
    });
  }

  /** An application/x-www-form-urlencoded body (the OAuth2 token POST): passwords and refresh tokens. */
  redactForm(text: string): string {
    return this.redactPairs(text, this.form);
  }

  private redactPairs(s: string, names: Set<string> | ((name: string) => boolean)): string {
    const secret = typeof names === 'function' ? names : (n: string): boolean => names.has(n);
    return s
      .split(/(&(?:amp;)?)/)
      .map((pair, i) => {
        if (i % 2) return pair; // the separator
        const eq = pair.indexOf('=');
        if (eq < 0) return pair;
        let name: string;
        try {
          name = decodeURIComponent(pair.slice(0, eq).replace(/\+/g, ' ')).toLowerCase();
        } catch {
          return pair;
        }
        return secret(name) ? `${pair.slice(0, eq)}=${encodeURIComponent(REDACTED)}` : pair;
      })
      .join('');
  }

  /** Kept for callers of the old name: a token answer, redacted failing closed. */
  redactJson(text: string): string {
    return this.redactTokenAnswer(text);
  }

  /**
   * A token endpoint's answer, failing closed. JSON (a BOM, escapes such as `\/` and `\u002d`
   * allowed): every string value is replaced unless its key is known to be public (expires_in,
   * issued_at, scope, errors, ...); the text stays byte for byte otherwise. If the result cannot be
   * proven clean, the JSON is written anew from the redacted values. Form-encoded text: every value
   * but the public ones. Anything else (text/plain, HTML, truncated JSON): the whole body is replaced.
   */
  redactTokenAnswer(text: string): string {
    const json = text.startsWith(BOM) ? text.slice(1) : text;
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch {
      if (FORM_TEXT.test(json)) return this.redactPairs(json, (n) => !TOKEN_ANSWER_PUBLIC.has(n));
      return unparsedTokenAnswer(Buffer.byteLength(text));
    }
    const secrets = new Set<string>();
    this.walkTokenAnswer(parsed, 'unknown', (s) => {
      if (s.length > 0 && s !== REDACTED) secrets.add(s);
      return s;
    });
    if (secrets.size === 0) return text;
    const out = text.replace(JSON_STRING, (lit) => {
      let v: unknown;
      try {
        v = JSON.parse(lit);
      } catch {
        return lit;
      }
      return typeof v === 'string' && secrets.has(v) ? JSON.stringify(REDACTED) : lit;
    });
    const cleaned = echoesRemoved(out, secrets);
    if (this.tokenAnswerClean(cleaned, secrets)) return cleaned;
    return echoesRemoved(JSON.stringify(this.walkTokenAnswer(parsed, 'unknown', () => REDACTED)), secrets);
  }

  /** Whether a redacted token answer parses and holds none of the secrets, in any escaping. */
  private tokenAnswerClean(text: string, secrets: Set<string>): boolean {
    let reparsed: unknown;
    try {
      reparsed = JSON.parse(text.startsWith(BOM) ? text.slice(1) : text);
    } catch {
      return false;
    }
    let clean = true;
    this.walkTokenAnswer(reparsed, 'unknown', (s) => {
      if (s !== REDACTED && s.length > 0) clean = false;
      return s;
    });
    if (!clean) return false;
    for (const s of secrets) if (s.length >= MIN_SECRET && secretForms(s).some((f) => text.includes(f))) return false;
    return true;
  }

  /** A copy of a parsed token answer with every secret string passed through `f`. */
  private walkTokenAnswer(v: unknown, kind: Kind, f: (secret: string) => string): unknown {
    if (typeof v === 'string') return kind === 'public' ? v : f(v);
    if (Array.isArray(v)) return v.map((x) => this.walkTokenAnswer(x, kind, f));
    if (v && typeof v === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = this.walkTokenAnswer(x, this.keyKind(k, kind), f);
      return out;
    }
    return v;
  }

  private keyKind(key: string, parent: Kind): Kind {
    if (this.jsonFields.has(key) || this.jsonFields.has(key.toLowerCase())) return 'secret';
    if (parent === 'secret') return 'secret';
    if (TOKEN_ANSWER_PUBLIC.has(key.toLowerCase())) return 'public';
    if (SECRET_KEY.test(normalizeKey(key))) return 'secret';
    return parent === 'public' ? 'public' : 'unknown';
  }

  /**
   * Every secret the request carried, to be searched for in the whole exchange (a registry may echo
   * it in an error): credentials of Authorization, the values of every header redacted (Cookie,
   * X-Registry-Auth, ...), secret query parameters (`access_token=`, `token=`) and form fields.
   */
  requestSecrets(headers: HeaderList, url: string, form?: string): string[] {
    const found = credentialsIn(headers);
    for (const [n, v] of headers) if (this.headers.has(n.toLowerCase()) && !KEEP_SCHEME.has(n.toLowerCase())) found.push(v);
    for (const [n, v] of headers) if (n.toLowerCase() === 'cookie') for (const c of v.split(/;\s*/)) found.push(c.slice(c.indexOf('=') + 1));
    const pairs = (text: string, names: Set<string>): void => {
      for (const pair of text.split('&')) {
        const eq = pair.indexOf('=');
        if (eq < 0) continue;
        try {
          const name = decodeURIComponent(pair.slice(0, eq).replace(/\+/g, ' ')).toLowerCase();
          // User names are redacted where named, never hunted through the fixture: they are also repository names.
          if (names.has(name) && !NOT_SECRET_VALUES.has(name)) {
            found.push(pair.slice(eq + 1), decodeURIComponent(pair.slice(eq + 1).replace(/\+/g, ' ')));
          }
        } catch {
          found.push(pair.slice(eq + 1));
        }
      }
    };
    const q = url.indexOf('?');
    if (q >= 0) pairs(url.slice(q + 1), this.query);
    if (form) pairs(form, this.form);
    return [...new Set(found.filter((x) => x !== REDACTED).flatMap(secretForms))];
  }

  /**
   * The last line of defence, over a whole fixture's text: anything shaped like a JWT, and the
   * credentials this very client sent (a Bearer token, a Basic pair or its password) wherever they
   * turn up. Returns the text and how many it replaced.
   */
  scrub(text: string, credentials: string[]): { text: string; hits: number } {
    let hits = 0;
    let out = text.replace(JWT, () => {
      hits++;
      return REDACTED;
    });
    for (const c of credentials) {
      if (c.length < MIN_SECRET) continue; // too short to search for without false hits
      const parts = out.split(c);
      if (parts.length > 1) {
        hits += parts.length - 1;
        out = parts.join(REDACTED);
      }
    }
    return { text: out, hits };
  }
}

/**
 * The secrets inside Authorization headers: Bearer tokens, opaque tokens with or without a scheme
 * (`token ghp_...`, a bare PAT), Basic pairs and their decoded passwords, the parameters of
 * parameterised schemes (AWS4 `Signature=`).
 */
export function credentialsIn(headers: HeaderList): string[] {
  const out: string[] = [];
  for (const [n, v] of headers) {
    const lower = n.toLowerCase();
    if (lower !== 'authorization' && lower !== 'proxy-authorization') continue;
    const m = /^\s*(\S+)\s+(.+?)\s*$/.exec(v);
    if (!m) {
      if (v.trim()) out.push(v.trim()); // no scheme: the whole value is the secret
      continue;
    }
    out.push(m[2]);
    for (const p of m[2].split(/\s*,\s*/)) {
      const eq = p.indexOf('=');
      if (eq > 0) out.push(p.slice(eq + 1).replace(/^"|"$/g, ''));
    }
    if (m[1].toLowerCase() === 'basic') {
      const pair = Buffer.from(m[2], 'base64').toString('utf8');
      const colon = pair.indexOf(':');
      if (colon >= 0) out.push(pair.slice(colon + 1));
    }
  }
  return out;
}

/** Shorter strings are not searched for across a text: too many false hits. */
const MIN_SECRET = 6;

/** A token answer's secrets also inside public strings (`"error_description":"token abc... expired"`). */
function echoesRemoved(text: string, secrets: Set<string>): string {
  let out = text;
  for (const s of secrets) if (s.length >= MIN_SECRET) for (const f of secretForms(s)) out = out.split(f).join(REDACTED);
  return out;
}

/** A secret as it may turn up elsewhere: as sent, URL-encoded, JSON-escaped (`\/`). */
export function secretForms(secret: string): string[] {
  const json = JSON.stringify(secret).slice(1, -1);
  return [...new Set([secret, encodeURIComponent(secret), json, json.replace(/\//g, '\\/')])];
}
