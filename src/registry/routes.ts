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
  const q = urlPath.indexOf('?');
  const p = q < 0 ? urlPath : urlPath.slice(0, q);
  if (p.startsWith(TOKEN_PREFIX)) return { kind: 'token' };
  if (p.startsWith(REDIRECT_PREFIX)) return { kind: 'redirect' };
  if (p === '/v2/' || p === '/v2') return { kind: 'ping' };
  if (p === '/v2/_catalog') return { kind: 'catalog' };
  let m: RegExpExecArray | null;
  // The name pattern is costly to fail on every request: try a route's regex only when its fixed part is there.
  const blobs = p.includes('/blobs/');
  if (blobs && (m = UPLOAD.exec(p))) return { kind: 'upload', name: m[1], ...(m[2] ? { session: m[2] } : {}) };
  if (blobs && (m = BLOB.exec(p))) return { kind: 'blob', name: m[1], digest: m[2] };
  if (p.includes('/manifests/') && (m = MANIFEST.exec(p))) {
    let reference: string;
    try {
      reference = decodeURIComponent(m[2]);
    } catch {
      return { kind: 'other' }; // not a valid percent-encoding: no registry route
    }
    return { kind: 'manifest', name: m[1], reference };
  }
  if (p.endsWith('/tags/list') && (m = TAGS.exec(p))) return { kind: 'tags', name: m[1] };
  if (p.includes('/referrers/') && (m = REFERRERS.exec(p))) return { kind: 'referrers', name: m[1], digest: m[2] };
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

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';

/**
 * Whether a registry answers a manifest GET/HEAD with the stored manifest of this media type, as
 * distribution 2.8 negotiates (measured with docker-registry 2.8.2, test/e2e/fidelity.test.ts):
 * - an OCI manifest or index only to a request whose Accept names that very type (no Accept, a wildcard
 *   or only Docker types: 404 MANIFEST_UNKNOWN), by tag or by digest;
 * - a Docker schema2 manifest or manifest list by digest whatever the Accept says; by tag only when
 *   the Accept names its type (otherwise the registry answers something else: a schema1 rewrite or
 *   the linux/amd64 child, which regtape cannot derive);
 * - any other type (schema1, artifacts) to no Accept, its own type or a wildcard.
 */
export function accepts(accepted: string[], mediaType: string | undefined, byDigest = false): boolean {
  if (!mediaType) return true;
  const t = mediaType.split(';')[0].trim().toLowerCase();
  if (t === OCI_MANIFEST || t === OCI_INDEX) return accepted.includes(t);
  if (t === DOCKER_MANIFEST || t === DOCKER_LIST) return byDigest || accepted.includes(t);
  return accepted.length === 0 || accepted.includes(t) || accepted.includes('*/*') || accepted.includes(t.split('/')[0] + '/*');
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
