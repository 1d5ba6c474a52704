/**
 * Hosts in the forward proxy: the fixture folder of each (`DIR/ghcr.io/`, `DIR/registry.local:5000/`),
 * and the token realms the recorded challenges name, which replay must recognise as token endpoints.
 */
import { HeaderList, headerValues } from '../fixture/model';

/** The folder name of a host: `host`, or `host:port` when the port is not 443; IPv6 in brackets. */
export function hostKey(host: string, port: number): string {
  const h = host.includes(':') ? `[${host.toLowerCase()}]` : host.toLowerCase();
  return port === 443 ? h : `${h}:${port}`;
}

const HOST_KEY = /^(?:[a-z0-9]([a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::\d{1,5})?$/;

/** Whether a folder name is a host key (a fixture folder of the forward proxy). */
export function isHostKey(name: string): boolean {
  return HOST_KEY.test(name);
}

/** `host:port` of a CONNECT request (`[::1]:443` for IPv6), or undefined. */
export function parseAuthority(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2]).toLowerCase(), port };
}

/** The realm URL of a Bearer challenge, or undefined. */
export function challengeRealm(header: string): URL | undefined {
  if (!/^\s*bearer\b/i.test(header)) return undefined;
  const m = /\brealm\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/i.exec(header);
  if (!m) return undefined;
  try {
    const u = new URL(m[1] ?? m[2] ?? '');
    return u.protocol === 'https:' || u.protocol === 'http:' ? u : undefined;
  } catch {
    return undefined;
  }
}

/** A URL's host folder and path: `hostKey + path`. */
function keyPath(u: URL): string {
  const port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
  return hostKey(u.hostname.replace(/^\[|\]$/g, ''), port) + u.pathname;
}

/**
 * Token endpoints, as `hostKey + path`, learned from the challenges that name them; and redirect
 * targets (a CDN's blob URLs) learned from the Location of redirects.
 */
export class Realms {
  private readonly known = new Set<string>();
  private readonly redirects = new Set<string>();
  /** Redirect targets kept: one per blob pulled; beyond this, the oldest are forgotten. */
  static readonly REDIRECTS_MAX = 100_000;

  /** Learns the realm of each Bearer challenge among these response headers. */
  learn(headers: HeaderList): void {
    for (const v of headerValues(headers, 'www-authenticate')) {
      const u = challengeRealm(v);
      if (!u) continue;
      this.known.add(keyPath(u));
    }
  }

  /** Learns the target of a redirect answer (absolute, or relative to `origin`). */
  learnRedirect(status: number, headers: HeaderList, origin: string): void {
    if (status < 300 || status > 399) return;
    for (const v of headerValues(headers, 'location')) {
      let u: URL;
      try {
        u = new URL(v, origin);
      } catch {
        continue;
      }
      if (u.protocol !== 'https:' && u.protocol !== 'http:') continue;
      const k = keyPath(u);
      this.redirects.delete(k);
      this.redirects.add(k);
      if (this.redirects.size > Realms.REDIRECTS_MAX) this.redirects.delete(this.redirects.values().next().value!);
    }
  }

  /** Whether a request to this host (path and query) follows a redirect seen earlier. */
  isRedirectTarget(key: string, url: string): boolean {
    return this.redirects.has(key + url.split('?')[0]);
  }

  /** Whether a request to this host (path and query) goes to a token endpoint. */
  isToken(key: string, url: string): boolean {
    return this.known.has(key + url.split('?')[0]);
  }
}

/** Whether a listening address is loopback only. */
export function isLoopback(addr: string): boolean {
  return addr === 'localhost' || addr === '::1' || /^127\./.test(addr);
}
