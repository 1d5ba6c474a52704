/**
 * Redaction: secrets never reach disk. Applied to every exchange before it is written.
 * Values become fixed, recognisable placeholders; the scheme of an Authorization header is kept
 * (it tells a reviewer which auth mode was in use and costs nothing).
 */
import { HeaderList } from '../fixture/model';

export const REDACTED = '<redacted>';

export interface RedactOptions {
  /** More header names to redact (lower-case compared). */
  headers?: string[];
}

const DEFAULT_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'docker-ratelimit-source', 'x-registry-auth'];
const KEEP_SCHEME = new Set(['authorization', 'proxy-authorization']);

export class Redactor {
  private readonly headers: Set<string>;
  constructor(opts: RedactOptions = {}) {
    this.headers = new Set([...DEFAULT_HEADERS, ...(opts.headers ?? []).map((h) => h.toLowerCase())]);
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
}
