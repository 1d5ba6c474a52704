/** The upstream registry: parsing `--upstream` and checking at start that it answers. */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { UserError } from '../http/server';

export const DEFAULT_UPSTREAM = 'https://registry-1.docker.io';

export function parseUpstream(s: string): URL {
  let u: URL;
  try {
    u = new URL(/^[a-z]+:\/\//i.test(s) ? s : `https://${s}`);
  } catch {
    throw new UserError(`--upstream ${JSON.stringify(s)} is not a URL (e.g. https://registry-1.docker.io or http://127.0.0.1:5000)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UserError(`--upstream must be http:// or https://, not ${u.protocol}`);
  return u;
}

/** Checks that the upstream answers `/v2/`; resolves with its Bearer challenge, if any. */
export async function checkUpstream(u: URL, agents?: UpstreamAgents): Promise<string | undefined> {
  const https_ = u.protocol === 'https:';
  const mod = https_ ? https : http;
  const agent = agents ? (https_ ? agents.https : agents.http) : undefined;
  const at = agents?.resolvedAt(u.hostname, Number(u.port || (https_ ? 443 : 80)));
  return new Promise<string | undefined>((resolve, reject) => {
    const req = mod.request(new URL('/v2/', u), { method: 'GET', timeout: 10_000, ...(agent ? { agent } : {}) }, (res) => {
      res.resume();
      const challenge = res.headers['www-authenticate'];
      resolve(Array.isArray(challenge) ? challenge[0] : challenge);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('no answer in 10 s'), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new UserError(
          u.protocol === 'https:' && speaksPlainHttp(e)
            ? `upstream ${u.origin}${at ? ` at ${at}` : ''} answered in plain HTTP, not TLS (${e.code}): use --upstream http://${u.host} (an --upstream without a scheme is taken as https)`
            : /CERT|SSL|TLS|VERIFY|SIGNATURE|ISSUER/i.test(e.code ?? '')
            ? `upstream ${u.origin}${at ? ` at ${at}` : ''}: its TLS certificate is not trusted (${e.code}): for a private CA, start regtape with NODE_EXTRA_CA_CERTS=/path/to/ca.pem or --upstream-ca /path/to/ca.pem`
            : `upstream ${u.origin}${at ? ` at ${at}` : ''} is unreachable (${e.code ?? e.message}): check --upstream${at ? ', --resolve' : ''} and the network`,
        ),
      ),
    );
    req.end();
  });
}

/** `--resolve HOST[:PORT]=ADDR[:PORT]`: connections for HOST go to ADDR, TLS still verified for HOST. */
export interface ResolveRule {
  host: string;
  /** only connections to this port of HOST (default: any port) */
  port?: number;
  address: string;
  /** the port to connect to instead (default: the same port) */
  toPort?: number;
}

/** Parses `--resolve` values: `ghcr.io=127.0.0.1:5000`, `ghcr.io:443=127.0.0.1:5000`, `registry.local=[::1]:5000`. */
export function parseResolve(values: string[]): ResolveRule[] {
  return values.map((v) => {
    const m = /^([^=\s]+?)(?::(\d+))?=(\[[0-9a-fA-F:.]+\]|[^:=\s\[\]]+)(?::(\d+))?$/.exec(v);
    const bad = (why: string): UserError => new UserError(`--resolve ${JSON.stringify(v)}: ${why} (expected HOST=ADDR:PORT, e.g. ghcr.io=127.0.0.1:5000)`);
    if (!m) throw bad('not HOST=ADDR[:PORT]');
    const portOf = (s: string | undefined): number | undefined => {
      if (s === undefined) return undefined;
      const n = Number(s);
      if (n < 1 || n > 65535) throw bad(`${s} is not a port`);
      return n;
    };
    const address = m[3].replace(/^\[(.*)\]$/, '$1');
    if (m[3].startsWith('[') && !net.isIPv6(address)) throw bad(`${m[3]} is not an IPv6 address`);
    return { host: m[1].toLowerCase(), port: portOf(m[2]), address, toPort: portOf(m[4]) };
  });
}

export interface UpstreamAgentOptions {
  /** `--resolve` values (strings as on the command line, or parsed rules) */
  resolve?: Array<string | ResolveRule>;
  /** `--upstream-ca FILE`: a PEM file of CA certificates trusted for upstreams besides the system's (and NODE_EXTRA_CA_CERTS) */
  ca?: string;
  keepAlive?: boolean;
}

export interface UpstreamAgents {
  http: http.Agent;
  https: https.Agent;
  /** Where a connection for host:port really goes, for messages: `127.0.0.1:5000 (--resolve)`, or undefined. */
  resolvedAt(host: string, port: number): string | undefined;
  destroy(): void;
}

/**
 * The agents for every outgoing connection of a recorder (upstream, token realms, CDNs): `--resolve`
 * rewrites where the TCP connection goes, while SNI and the certificate check keep the name the client
 * asked for; `--upstream-ca` adds trusted CAs. Pools are keyed by the logical host, as without them.
 */
export function upstreamAgents(opts: UpstreamAgentOptions = {}): UpstreamAgents {
  const rules = (opts.resolve ?? []).flatMap((r) => (typeof r === 'string' ? parseResolve([r]) : [r]));
  const ca = opts.ca ? trustedCAs(opts.ca) : undefined;
  const keepAlive = opts.keepAlive ?? true;
  const find = (host: string | null | undefined, port: number): ResolveRule | undefined => {
    const h = (host ?? '').toLowerCase().replace(/^\[(.*)\]$/, '$1');
    return rules.find((r) => r.host === h && r.port === port) ?? rules.find((r) => r.host === h && r.port === undefined);
  };
  const redirect = <A extends http.Agent>(agent: A, defaultPort: number): A => {
    if (!rules.length) return agent;
    const create = agent.createConnection.bind(agent) as (o: net.NetConnectOpts & tls.ConnectionOptions, cb?: (err: Error | null, s: net.Socket) => void) => net.Socket;
    // createConnection is the one hook that sees host and port before the socket exists.
    (agent as unknown as { createConnection: typeof create }).createConnection = (o, cb) => {
      const port = Number(o.port ?? defaultPort);
      const rule = find(o.host, port);
      if (!rule) return create(o, cb);
      // SNI and the certificate check stay on the name asked for (tls.connect verifies servername || host).
      const servername = o.servername || (net.isIP(o.host ?? '') ? undefined : (o.host ?? undefined));
      return create({ ...o, host: rule.address, port: rule.toPort ?? port, ...(servername ? { servername } : {}) }, cb);
    };
    return agent;
  };
  const httpAgent = redirect(new http.Agent({ keepAlive }), 80);
  const httpsAgent = redirect(new https.Agent({ keepAlive, ...(ca ? { ca } : {}) }), 443);
  return {
    http: httpAgent,
    https: httpsAgent,
    resolvedAt(host, port) {
      const r = find(host, port);
      return r ? `${net.isIPv6(r.address) ? `[${r.address}]` : r.address}:${r.toPort ?? port} (--resolve)` : undefined;
    },
    destroy() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}

/** The system's roots, NODE_EXTRA_CA_CERTS (an explicit `ca` list would drop it) and the user's file. */
function trustedCAs(file: string): string[] {
  let pem: string;
  try {
    pem = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserError(`--upstream-ca ${file}: cannot read it (${(e as NodeJS.ErrnoException).code})`);
  }
  const certs = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (!certs.length) throw new UserError(`--upstream-ca ${file}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)`);
  for (const c of certs) {
    try {
      new X509Certificate(c);
    } catch {
      throw new UserError(`--upstream-ca ${file}: holds a certificate that does not parse`);
    }
  }
  const extra: string[] = [];
  const envFile = process.env.NODE_EXTRA_CA_CERTS;
  if (envFile) {
    try {
      extra.push(...(fs.readFileSync(envFile, 'utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []));
    } catch {
      // node itself warned at start-up about an unreadable NODE_EXTRA_CA_CERTS
    }
  }
  return [...tls.rootCertificates, ...extra, ...certs];
}

/** What a TLS handshake with a plain-HTTP server fails with (OpenSSL reads `HTTP/1.1 400` as a record). */
export function speaksPlainHttp(e: NodeJS.ErrnoException): boolean {
  return e.code === 'EPROTO' || e.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || e.code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG' || /wrong version number|packet length too long/i.test(e.message);
}
