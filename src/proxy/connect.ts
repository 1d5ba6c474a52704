/**
 * The forward proxy's listener (HTTPS_PROXY=http://127.0.0.1:8000). Three kinds of request arrive:
 * - `CONNECT host:443`: regtape answers 200, terminates the client's TLS with a certificate for that
 *   host from its own CA (the SNI name when there is one), and reads the HTTP requests inside;
 * - absolute-form `GET http://host/path`: plain-http proxying;
 * - origin-form `GET /path`: addressed to regtape itself (the control API).
 * Requests of the first two kinds reach `dispatch` with the origin they were meant for.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { Duplex } from 'node:stream';
import type { CertificateAuthority } from './ca';
import { answerProtocolErrors } from '../http/server';
import { hostKey, parseAuthority } from './hosts';

export interface ProxyTarget {
  scheme: 'http' | 'https';
  /** Host name or IP address, without brackets. */
  host: string;
  port: number;
  /** The fixture folder of this host: `host`, or `host:port` when the port is not 443. */
  key: string;
  /** `https://host[:port]` */
  origin: string;
}

export interface ListenerOptions {
  ca: CertificateAuthority;
  /** Why the client may not reach this host (a refusal), or undefined when it may. */
  refuse(host: string, port: number): string | undefined;
  dispatch(target: ProxyTarget, req: http.IncomingMessage, res: http.ServerResponse): void;
  /** Origin-form requests, addressed to regtape itself. */
  local(req: http.IncomingMessage, res: http.ServerResponse): void;
  log: (line: string, level?: 'request' | 'warn') => void;
}

/** What the proxy's listener owns besides the server: tunnels, and the server that reads inside them. */
export interface ForwardListener {
  server: http.Server;
  /** Ends every tunnel and connection still open. */
  closeAll(): void;
}

function target(scheme: 'http' | 'https', host: string, port: number): ProxyTarget {
  const h = host.includes(':') ? `[${host}]` : host;
  const dflt = scheme === 'https' ? 443 : 80;
  return { scheme, host, port, key: hostKey(host, port), origin: `${scheme}://${h}${port === dflt ? '' : ':' + port}` };
}

function plainAnswer(socket: Duplex, status: string, text: string): void {
  socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`);
}

export function forwardListener(opts: ListenerOptions): ForwardListener {
  const targets = new WeakMap<net.Socket, ProxyTarget>();
  const tunnels = new Set<Duplex>();
  /** Hosts whose certificate a client refused: said once, not per connection. */
  const refusedCert = new Set<string>();

  // Reads the requests inside CONNECT tunnels (TLS already terminated, or plain http in a tunnel).
  const inner = http.createServer((req, res) => {
    const t = targets.get(req.socket);
    if (!t) return void res.writeHead(500).end();
    opts.dispatch(t, req, res);
  });
  // Go clients keep idle connections up to 90 s; see http/server.ts start().
  inner.keepAliveTimeout = 120_000;
  inner.headersTimeout = 125_000;

  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith('/')) return opts.local(req, res);
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return void res.writeHead(400, { 'content-type': 'text/plain' }).end(`regtape: not a proxy request: ${url.slice(0, 100)}\n`);
    }
    if (u.protocol !== 'http:') {
      return void res.writeHead(400, { 'content-type': 'text/plain' }).end(`regtape: ${u.protocol} requests go through CONNECT (set HTTPS_PROXY), not as a plain proxy request\n`);
    }
    const host = u.hostname.replace(/^\[|\]$/g, '');
    const port = u.port ? Number(u.port) : 80;
    const why = opts.refuse(host, port);
    if (why) {
      req.resume();
      opts.log(`regtape: refused ${req.method} ${url.split('?')[0]}: ${why}`, 'warn');
      return void res.writeHead(403, { 'content-type': 'text/plain' }).end(`regtape: ${why}\n`);
    }
    // The proxy's own headers are not the origin's business.
    delete req.headers['proxy-authorization'];
    delete req.headers['proxy-connection'];
    req.url = u.pathname + u.search;
    opts.dispatch(target('http', host, port), req, res);
  });
  answerProtocolErrors(server);

  server.on('connect', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    tunnels.add(socket);
    socket.on('close', () => tunnels.delete(socket));
    socket.on('error', () => socket.destroy());
    const auth = parseAuthority(req.url ?? '');
    if (!auth) return plainAnswer(socket, '400 Bad Request', `regtape: CONNECT needs host:port, not ${JSON.stringify((req.url ?? '').slice(0, 100))}\n`);
    const why = opts.refuse(auth.host, auth.port);
    if (why) {
      opts.log(`regtape: refused CONNECT ${req.url}: ${why}`, 'warn');
      return plainAnswer(socket, '403 Forbidden', `regtape: ${why}\n`);
    }
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length) socket.unshift(head);
    // TLS (a handshake record starts with 0x16) or plain http through the tunnel.
    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.unshift(first);
      if (first[0] !== 0x16) {
        const t = target('http', auth.host, auth.port);
        targets.set(socket as net.Socket, t);
        inner.emit('connection', socket);
        socket.resume();
        return;
      }
      opts.ca.secureContextFor(auth.host).then(
        (secureContext) => {
          const tlsSocket = new tls.TLSSocket(socket as net.Socket, {
            isServer: true,
            secureContext,
            ALPNProtocols: ['http/1.1'],
            // The client checks the certificate against the name it sent (SNI), which may differ from CONNECT's.
            SNICallback: (name, cb) => {
              if (!name || name === auth.host) return cb(null, secureContext);
              opts.ca.secureContextFor(name).then((ctx) => cb(null, ctx), (e: Error) => cb(e));
            },
          });
          targets.set(tlsSocket, target('https', auth.host, auth.port));
          tunnels.add(tlsSocket);
          tlsSocket.on('close', () => tunnels.delete(tlsSocket));
          tlsSocket.on('error', (e: NodeJS.ErrnoException) => {
            if (/ALERT_(UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN)/.test(e.code ?? '') && !refusedCert.has(auth.host)) {
              refusedCert.add(auth.host);
              opts.log(`regtape: the client refused regtape's certificate for ${auth.host} (${e.code}): make it trust ${opts.ca.certPath}`, 'warn');
            }
            tlsSocket.destroy();
          });
          inner.emit('connection', tlsSocket);
          socket.resume();
        },
        (e: Error) => {
          opts.log(`regtape: no certificate for ${auth.host}: ${e.message}`, 'warn');
          socket.destroy();
        },
      );
    });
  });

  return {
    server,
    closeAll: () => {
      inner.closeAllConnections();
      for (const s of tunnels) s.destroy();
      tunnels.clear();
    },
  };
}
