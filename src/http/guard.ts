/**
 * What record and replay refuse before they look at a request:
 * - a Host header naming neither a loopback name, nor the address the connection came in on, nor a
 *   name the user allowed (`--allow-host`, the TLS certificate's names): a web page reaching the
 *   server by DNS rebinding sends its own name;
 * - an absolute-form request (`GET http://example/ HTTP/1.1`, what `curl -x` sends): regtape is not
 *   a forward proxy in this mode (`--proxy` is, src/proxy/); writing such a request as a fixture would
 *   break the folder.
 */
import type * as http from 'node:http';

const LOOPBACK_NAME = /^(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|0:0:0:0:0:0:0:1)$/i;

/** `host[:port]` of a Host header or URL authority, lower case, IPv6 without brackets. */
export function splitHost(hostPort: string): { host: string; port?: string } {
  const v = hostPort.trim().toLowerCase();
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(v) ?? /^([^:]+)(?::(\d+))?$/.exec(v);
  return m ? { host: m[1], port: m[2] } : { host: v };
}

/**
 * An `--allow-host` pattern: a host name or address, `*` for any run of characters
 * (`*.cloudfront.net`), optionally with `:port` (then only that port).
 */
export function hostMatcher(patterns: string[]): (hostPort: string) => boolean {
  const rules = patterns.map((p) => {
    const { host, port } = splitHost(p);
    const re = new RegExp('^' + host.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$', 'i');
    return { re, port };
  });
  return (hostPort) => {
    const { host, port } = splitHost(hostPort);
    return rules.some((r) => r.re.test(host) && (!r.port || r.port === port));
  };
}

/** The message for a request whose Host names another server, else undefined. */
export function foreignHost(req: http.IncomingMessage, allowed: (hostPort: string) => boolean): string | undefined {
  const value = req.headers.host;
  if (value === undefined) return undefined; // HTTP/1.0 without Host: no browser sends that
  const { host } = splitHost(value);
  if (LOOPBACK_NAME.test(host) || allowed(value)) return undefined;
  const local = (req.socket.localAddress ?? '').replace(/^::ffff:/, '').toLowerCase();
  if (host === local) return undefined;
  return (
    `regtape: refused a request for Host ${JSON.stringify(value)}: it names neither this server's address nor a loopback name ` +
    `(a defence against DNS rebinding); to accept it, start regtape with --allow-host ${host}`
  );
}

/** An absolute-form request target (a client using regtape as its HTTP proxy). */
export function isAbsoluteForm(req: http.IncomingMessage): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(req.url ?? '');
}

/**
 * Answers an absolute-form request with a clear refusal; true when it did. One small function, so
 * that a forward-proxy mode can take its place.
 */
export function refuseForwardProxyRequest(req: http.IncomingMessage, res: http.ServerResponse): boolean {
  if (!isAbsoluteForm(req)) return false;
  let target = req.url ?? '';
  try {
    target = new URL(target).origin;
  } catch {
    /* keep it as sent */
  }
  refuse(
    res,
    400,
    'UNSUPPORTED',
    `regtape: ${target} was requested through regtape as an HTTP proxy (absolute-form request); regtape is the registry itself: ` +
      `point the client at its address as the registry (e.g. 127.0.0.1:8000/repo:tag), not as --proxy/-x/HTTP_PROXY; or start regtape with --proxy to be one`,
  );
  req.resume();
  return true;
}

/** Both checks; true when the request was refused and answered. */
export function guardRequest(req: http.IncomingMessage, res: http.ServerResponse, allowed: (hostPort: string) => boolean): boolean {
  if (refuseForwardProxyRequest(req, res)) return true;
  const why = foreignHost(req, allowed);
  if (!why) return false;
  refuse(res, 403, 'DENIED', why);
  req.resume();
  return true;
}

export function refuse(res: http.ServerResponse, status: number, code: string, message: string): void {
  // The registry's error shape (distribution spec), so that clients print the message.
  const body = JSON.stringify({ errors: [{ code, message, detail: null }] });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0', 'x-regtape': 'refused' });
  res.end(body);
}
