/**
 * The registry API's routes (distribution spec, "Endpoints"), as far as regtape needs to tell them apart.
 * Repository names contain slashes, so routes are recognised from the right.
 */
export type Route =
  | { kind: 'ping' }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'upload'; name: string; session?: string }
  | { kind: 'tags'; name: string }
  | { kind: 'catalog' }
  | { kind: 'referrers'; name: string; digest: string }
  /** regtape's own: the token endpoint behind a rewritten Bearer realm (registry/auth.ts). */
  | { kind: 'token' }
  /** regtape's own: the stable URL of a blob redirect to a CDN (registry/redirect.ts). */
  | { kind: 'redirect' }
  | { kind: 'other' };

import { TOKEN_PREFIX } from './auth';
import { REDIRECT_PREFIX } from './redirect';

const NAME = '([a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)';
const MANIFEST = new RegExp(`^/v2/${NAME}/manifests/([^/]+)$`);
const BLOB = new RegExp(`^/v2/${NAME}/blobs/([a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+)$`);
const UPLOAD = new RegExp(`^/v2/${NAME}/blobs/uploads/?([^/]*)$`);
const TAGS = new RegExp(`^/v2/${NAME}/tags/list$`);
const REFERRERS = new RegExp(`^/v2/${NAME}/referrers/([^/]+)$`);

export function routeOf(urlPath: string): Route {
  const p = urlPath.split('?')[0];
  if (p.startsWith(TOKEN_PREFIX)) return { kind: 'token' };
  if (p.startsWith(REDIRECT_PREFIX)) return { kind: 'redirect' };
  if (p === '/v2/' || p === '/v2') return { kind: 'ping' };
  if (p === '/v2/_catalog') return { kind: 'catalog' };
  let m: RegExpExecArray | null;
  if ((m = UPLOAD.exec(p))) return { kind: 'upload', name: m[1], ...(m[2] ? { session: m[2] } : {}) };
  if ((m = BLOB.exec(p))) return { kind: 'blob', name: m[1], digest: m[2] };
  if ((m = MANIFEST.exec(p))) {
    let reference: string;
    try {
      reference = decodeURIComponent(m[2]);
    } catch {
      return { kind: 'other' }; // not a valid percent-encoding: no registry route
    }
    return { kind: 'manifest', name: m[1], reference };
  }
  if ((m = TAGS.exec(p))) return { kind: 'tags', name: m[1] };
  if ((m = REFERRERS.exec(p))) return { kind: 'referrers', name: m[1], digest: m[2] };
  return { kind: 'other' };
}

/** The set of media types a request accepts: every Accept line split on commas, parameters dropped. */
export function acceptSet(acceptLines: string[]): string[] {
  const set = new Set<string>();
  for (const line of acceptLines) {
    for (const part of line.split(',')) {
      const t = part.split(';')[0].trim().toLowerCase();
      if (t) set.add(t);
    }
  }
  return [...set].sort();
}

/** How a registry negotiates a manifest: the stored media type must be among the accepted ones. */
export function accepts(accepted: string[], mediaType: string | undefined): boolean {
  if (accepted.length === 0 || !mediaType) return true;
  const t = mediaType.split(';')[0].trim().toLowerCase();
  return accepted.includes(t) || accepted.includes('*/*') || accepted.includes(t.split('/')[0] + '/*');
}

/** The registry error code for "nothing here" on a route. */
export function unknownCode(route: Route): string {
  switch (route.kind) {
    case 'manifest':
      return 'MANIFEST_UNKNOWN';
    case 'blob':
      return 'BLOB_UNKNOWN';
    case 'upload':
      return 'BLOB_UPLOAD_UNKNOWN';
    default:
      return 'NAME_UNKNOWN';
  }
}
