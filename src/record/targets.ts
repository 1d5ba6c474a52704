/**
 * Where a request to the recorder goes, and how the answer's headers keep the client on the proxy.
 * Three kinds of target: the upstream registry; a token realm (`/__regtape/token/...`, after the
 * Bearer challenge was rewritten to point here); a redirect target (`/__regtape/redirect/...`, after
 * a blob redirect to a CDN was rewritten to point here).
 */
import { HeaderList } from '../fixture/model';
import { pathToRealm, rewriteChallengeRealm } from '../registry/auth';
import { isRedirect, redirectPath, redirectTarget } from '../registry/redirect';
import { routeOf } from '../registry/routes';
import { rewriteLocationHeaders } from './rewrite';

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\])$/;

export interface Target {
  origin: string;
  /** Path and query to send there. */
  path: string;
  /** Token endpoints and CDNs: bodies may carry secrets or are followed-up downloads. */
  kind: 'upstream' | 'token' | 'redirect';
}

export class Targets {
  readonly upstreamOrigins: Set<string>;
  /** Stable redirect path -> the signed URL it stands for. Only in memory: signatures never reach disk. */
  private redirects = new Map<string, string>();
  /**
   * Loopback token servers and CDNs seen with a port (`http://127.0.0.1` → `41234`): fixtures are
   * written without it (noise.ts), so a request replay hands on (--record-missing) may lack it.
   */
  private localPorts = new Map<string, string>();

  /** Origins the upstream named to this process: realms of its challenges, targets of its redirects. */
  private named = new Set<string>();

  constructor(
    readonly upstream: URL,
    /** Hosts the user allowed besides (`--allow-host`). */
    private readonly allowHost: (hostPort: string) => boolean = () => false,
  ) {
    this.upstreamOrigins = new Set([upstream.origin]);
  }

  /** Whether a request may go there: the upstream, an origin it named, or a host the user allowed. Never any host a client names. */
  permits(t: Target): boolean {
    if (t.kind === 'upstream' || this.upstreamOrigins.has(t.origin) || this.named.has(t.origin)) return true;
    try {
      return this.allowHost(new URL(t.origin).host);
    } catch {
      return false;
    }
  }

  /** The target of a request URL (path and query), or undefined for a malformed regtape URL. */
  of(url: string): Target | undefined {
    const p = url.split('?')[0];
    const route = routeOf(p);
    if (route.kind === 'token') {
      const realm = pathToRealm(p);
      if (!realm) return undefined;
      this.withLocalPort(realm);
      const q = url.indexOf('?');
      const search = [realm.search.slice(1), q >= 0 ? url.slice(q + 1) : ''].filter(Boolean).join('&');
      return { origin: realm.origin, path: realm.pathname + (search ? '?' + search : ''), kind: 'token' };
    }
    if (route.kind === 'redirect') {
      const signed = this.redirects.get(p);
      const t = signed ? new URL(signed) : redirectTarget(p);
      if (!t) return undefined;
      if (!signed) this.withLocalPort(t);
      return { origin: t.origin, path: t.pathname + t.search, kind: 'redirect' };
    }
    return { origin: this.upstream.origin, path: url, kind: 'upstream' };
  }

  /** Remembers the port of a loopback realm or redirect target (from a challenge or a Location). */
  learn(url: string): void {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return;
    }
    if (u.protocol === 'http:' || u.protocol === 'https:') this.named.add(u.origin);
    if (u.port && LOOPBACK.test(u.hostname)) this.localPorts.set(`${u.protocol}//${u.hostname}`, u.port);
  }

  /** Learns the realm of a Bearer challenge (the upstream's own, before it is rewritten). */
  learnChallenge(header: string | undefined): void {
    const m = header && /\brealm\s*=\s*"?([^",\s]+)/i.exec(header);
    if (m) this.learn(m[1]);
  }

  private withLocalPort(u: URL): void {
    if (u.port || !LOOPBACK.test(u.hostname)) return;
    const port = this.localPorts.get(`${u.protocol}//${u.hostname}`);
    if (port) u.port = port;
  }

  /** Response headers as the client gets them: URLs on the upstream, realms and redirects turned to us. */
  clientHeaders(status: number, headers: HeaderList, target: Target, liveOrigin: string): HeaderList {
    let h = headers;
    if (isRedirect(status)) {
      h = h.map(([n, v]) => {
        if (n.toLowerCase() !== 'location') return [n, v];
        let abs: URL;
        try {
          abs = new URL(v, target.origin + target.path);
        } catch {
          return [n, v];
        }
        // An ordinary redirect within the registry (no signed query) is rewritten like any Location below.
        if (this.upstreamOrigins.has(abs.origin) && !abs.search) return [n, v];
        this.learn(abs.origin);
        const stable = redirectPath(abs);
        this.redirects.set(stable, abs.href);
        return [n, liveOrigin + stable];
      });
    }
    h = rewriteLocationHeaders(h, this.upstreamOrigins, liveOrigin);
    return h.map(([n, v]) => {
      if (n.toLowerCase() !== 'www-authenticate') return [n, v];
      this.learnChallenge(v);
      return [n, rewriteChallengeRealm(v, liveOrigin)];
    });
  }
}
