/**
 * Redaction: secrets never reach disk. Applied to every exchange before it is written.
 * Values become fixed, recognisable placeholders. The scheme of an Authorization header is kept:
 * it tells a reviewer which auth mode was in use and is no secret.
 */
import { HeaderList } from '../fixture/model';
import { TOKEN_FIELDS } from '../registry/auth';

export const REDACTED = '<redacted>';

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
const FORM = ['password', 'refresh_token', 'username', 'access_token', 'client_secret', 'assertion'];
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

  /** Replaces the values of secret query parameters, keeping the URL otherwise as it was. */
  redactUrl(url: string): string {
    const q = url.indexOf('?');
    if (q < 0) return url;
    return url.slice(0, q + 1) + this.redactPairs(url.slice(q + 1), this.query);
  }

  /** An application/x-www-form-urlencoded body (the OAuth2 token POST): passwords and refresh tokens. */
  redactForm(text: string): string {
    return this.redactPairs(text, this.form);
  }

  private redactPairs(s: string, names: Set<string>): string {
    return s
      .split('&')
      .map((pair) => {
        const eq = pair.indexOf('=');
        if (eq < 0) return pair;
        let name: string;
        try {
          name = decodeURIComponent(pair.slice(0, eq).replace(/\+/g, ' ')).toLowerCase();
        } catch {
          return pair;
        }
        return names.has(name) ? `${pair.slice(0, eq)}=${encodeURIComponent(REDACTED)}` : pair;
      })
      .join('&');
  }

  /**
   * Token fields in a JSON body, at any depth. Only the secret string values are replaced in the
   * text; everything else stays byte for byte.
   */
  redactJson(text: string): string {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      return text;
    }
    const secrets = new Set<string>();
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') {
        for (const [k, x] of Object.entries(v)) {
          if (this.jsonFields.has(k) && typeof x === 'string' && x.length > 0) secrets.add(x);
          else walk(x);
        }
      }
    };
    walk(parsed);
    let out = text;
    for (const s of secrets) out = out.split(JSON.stringify(s)).join(JSON.stringify(REDACTED));
    return out;
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
      if (c.length < 6) continue; // too short to search for without false hits
      const parts = out.split(c);
      if (parts.length > 1) {
        hits += parts.length - 1;
        out = parts.join(REDACTED);
      }
    }
    return { text: out, hits };
  }
}

/** The secrets inside Authorization headers: Bearer tokens, Basic pairs, their decoded passwords. */
export function credentialsIn(headers: HeaderList): string[] {
  const out: string[] = [];
  for (const [n, v] of headers) {
    const lower = n.toLowerCase();
    if (lower !== 'authorization' && lower !== 'proxy-authorization') continue;
    const m = /^\s*(\S+)\s+(\S+)\s*$/.exec(v);
    if (!m) continue;
    out.push(m[2]);
    if (m[1].toLowerCase() === 'basic') {
      const pair = Buffer.from(m[2], 'base64').toString('utf8');
      const colon = pair.indexOf(':');
      if (colon >= 0) {
        out.push(pair.slice(colon + 1));
        out.push(encodeURIComponent(pair.slice(colon + 1)));
      }
    }
  }
  return out;
}
