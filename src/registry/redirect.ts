/**
 * Blob redirects: registries answer blob GETs with 307/302 to a CDN or object store, with a signed,
 * expiring query (Docker Hub's `verify=`, S3's `X-Amz-*`, CloudFront's `Signature`). regtape turns
 * such a Location into a stable URL on its own origin, without the query, so the follow-up request
 * passes through it, and neither the signature nor its expiry is stored or matched on:
 *   https://cdn.example/registry-v2/.../data?verify=123-abc  ->  /__regtape/redirect/https/cdn.example/registry-v2/.../data
 */
export const REDIRECT_PREFIX = '/__regtape/redirect/';

/** The stable proxy path for a redirect target (its query dropped). */
export function redirectPath(target: URL): string {
  return `${REDIRECT_PREFIX}${target.protocol.slice(0, -1)}/${target.host}${target.pathname}`;
}

/** The target a stable redirect path stands for, without the query (which only the live recorder knows). */
export function redirectTarget(urlPath: string): URL | undefined {
  if (!urlPath.startsWith(REDIRECT_PREFIX)) return undefined;
  const m = /^(https?)\/([^/?]+)(\/[^?]*)?/.exec(urlPath.slice(REDIRECT_PREFIX.length));
  if (!m) return undefined;
  try {
    return new URL(`${m[1]}://${m[2]}${m[3] ?? '/'}`);
  } catch {
    return undefined;
  }
}

/** Statuses whose Location the client follows. */
export function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}
