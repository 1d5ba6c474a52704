/**
 * URLs in response headers that point at the upstream are turned towards the proxy, so the client
 * stays on it (upload sessions, pagination). In fixtures they are stored with ORIGIN_PLACEHOLDER,
 * which replay turns into its own address.
 */
import { ORIGIN_PLACEHOLDER } from '../fixture/model';

/** `target` if `value` is an absolute URL on one of `origins`, with that origin replaced; else undefined. */
function retarget(value: string, origins: Set<string>, target: string): string | undefined {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    return undefined; // relative: the client resolves it against the proxy already
  }
  if (!origins.has(u.origin)) return undefined;
  return target + value.slice(u.origin.length);
}

/** Rewrites Location and the URLs inside Link headers. Returns new header lines. */
export function rewriteLocationHeaders(
  headers: Array<[string, string]>,
  upstreamOrigins: Set<string>,
  target: string,
): Array<[string, string]> {
  return headers.map(([n, v]) => {
    const lower = n.toLowerCase();
    if (lower === 'location' || lower === 'content-location') return [n, retarget(v, upstreamOrigins, target) ?? v];
    if (lower === 'link') return [n, v.replace(/<([^>]*)>/g, (_all, url: string) => `<${retarget(url, upstreamOrigins, target) ?? url}>`)];
    return [n, v];
  });
}

/** The same headers with the proxy's live origin replaced by the placeholder, for the fixture. */
export function toPlaceholder(headers: Array<[string, string]>, liveOrigin: string): Array<[string, string]> {
  return headers.map(([n, v]) => [n, v.split(liveOrigin).join(ORIGIN_PLACEHOLDER)]);
}
