/**
 * HTTPS for the registry port (record --tls, replay --tls, the forward proxy's intercepted tunnels):
 * one constructor for a plain or TLS server, the scheme a request came in on, and a clear answer to a
 * client that speaks plain HTTP to a TLS port (instead of a handshake failure it cannot explain).
 */
import * as http from 'node:http';
import * as https from 'node:https';
import type * as net from 'node:net';
import type * as tls from 'node:tls';

/** What a TLS server presents: one certificate, or one chosen per SNI name. */
export type ServerTls =
  | { cert: string; key: string }
  | { SNICallback: (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void; cert?: string; key?: string };

export type RegistryServer = http.Server | https.Server;

/** A plain HTTP server, or an HTTPS one when `tls` is given. `log` gets one line per failed handshake (bounded). */
export function createServer(handler: http.RequestListener, tlsOpts?: ServerTls, log?: (line: string) => void): RegistryServer {
  if (!tlsOpts) return http.createServer(handler);
  const server = https.createServer({ ...tlsOpts, minVersion: 'TLSv1.2' }, handler);
  refusePlainHttp(server);
  reportHandshakeErrors(server, log);
  return server;
}

export function isTls(server: net.Server): boolean {
  return server instanceof https.Server;
}

/** `https://host` or `http://host` as the client addressed us: the origin for URLs we hand back. */
export function requestOrigin(req: http.IncomingMessage, fallbackHost = '127.0.0.1'): string {
  const encrypted = (req.socket as tls.TLSSocket).encrypted === true;
  return `${encrypted ? 'https' : 'http'}://${req.headers.host ?? fallbackHost}`;
}

const PLAIN_ON_TLS =
  'regtape serves HTTPS on this port (--tls): use https:// and trust the certificate (`regtape ca` prints the path of the CA certificate)\n';

/**
 * Looks at the first byte of each connection: a TLS record (0x16, handshake) goes on to the TLS
 * server; anything else is answered with a plain-HTTP 400 that says what to do. The peeked bytes are
 * put back, and node's TLS socket reads what is buffered before it takes over the handle.
 */
function refusePlainHttp(server: https.Server): void {
  const tlsListeners = server.listeners('connection') as Array<(socket: net.Socket) => void>;
  server.removeAllListeners('connection');
  // The http layer only knows a connection once its handshake is done: closeAllConnections() must
  // also end those still silent or mid-handshake, or close() waits for their timeouts.
  const sockets = new Set<net.Socket>();
  const closeAll = server.closeAllConnections.bind(server);
  server.closeAllConnections = (): void => {
    for (const s of sockets) s.destroy();
    closeAll();
  };
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    // A connection that never sends anything is closed like one that never finishes its headers.
    socket.setTimeout(server.headersTimeout || 60_000, () => socket.destroy());
    socket.once('error', () => socket.destroy());
    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.setTimeout(0);
      if (first[0] === 0x16) {
        socket.unshift(first);
        for (const l of tlsListeners) l.call(server, socket);
        return;
      }
      socket.end(
        `HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(PLAIN_ON_TLS)}\r\nConnection: close\r\n\r\n${PLAIN_ON_TLS}`,
      );
    });
  });
}

/** Failed handshakes mostly mean "the client does not trust the certificate": say so, a few times, not per retry forever. */
function reportHandshakeErrors(server: https.Server, log?: (line: string) => void): void {
  let shown = 0;
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    const from = socket.remoteAddress ?? 'a client';
    socket.destroy();
    if (!log || shown > 10) return;
    shown++;
    const alert = /alert (?:number )?(\d+)|sslv3 alert ([a-z ]+)/i.exec(err.message);
    const untrusted = /unknown ca|bad certificate|certificate unknown|alert number (42|46|48)/i.test(err.message);
    const why = untrusted ? 'the client does not trust the certificate: give it the CA certificate (README: TLS)' : (err.code ?? err.message);
    log(`regtape: TLS handshake from ${from} failed: ${why}${alert && !untrusted ? ` (${alert[0]})` : ''}${shown > 10 ? ' (further handshake errors not shown)' : ''}`);
  });
}
