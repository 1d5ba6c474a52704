/**
 * Registry clients (skopeo, podman, dockerd, the docker CLI) first send a TLS ClientHello to an
 * "insecure" registry's plain port. Go then needs an HTTP answer to fall back to http; a reset makes
 * `docker manifest inspect` fail. So every malformed request, a ClientHello included, gets a 400.
 */
import type { Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { isTls, RegistryServer } from './tls';

export function answerProtocolErrors(server: RegistryServer): void {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      // headersTimeout or requestTimeout (ServerLimits): the client was too slow to send its request.
      socket.end('HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const body = tooLarge
      ? 'request headers too large\n'
      : isTls(server)
        ? 'malformed HTTP request\n'
        : 'regtape speaks plain HTTP on this port; point the client at http:// (e.g. --tls-verify=false, --insecure)\n';
    socket.end(
      `HTTP/1.1 ${tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\n` +
        `Content-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  });
}

/** Headers that describe one connection, not the message: never recorded, never replayed. */
export const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
]);

/** Header lines of an incoming message in wire order, repeated names kept. */
export function rawHeaderList(raw: string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i].toLowerCase(), raw[i + 1]]);
  return out;
}

/**
 * What one client may hold of a server, so a slow or greedy client cannot starve the others.
 * Defaults: DEFAULT_LIMITS.
 */
export interface ServerLimits {
  /** From the first byte of a request to the end of its headers (slowloris); then 408 and close. */
  headersTimeoutMs?: number;
  /** From the first byte of a request to the end of its body; then 408 and close. 0: none. */
  requestTimeoutMs?: number;
  /** A connection with no bytes moving either way for this long is closed (a client that stopped reading). 0: none. */
  idleTimeoutMs?: number;
  /** Open connections at most; more are closed as they come (each Go client holds a handful). */
  maxConnections?: number;
}

export const DEFAULT_LIMITS: Required<ServerLimits> = {
  headersTimeoutMs: 30_000,
  requestTimeoutMs: 300_000,
  // None by default: the recorder may wait on a slow upstream longer (replay sets REPLAY_IDLE_TIMEOUT_MS).
  idleTimeoutMs: 0,
  maxConnections: 1024,
};

/** Replay's idle limit: longer than keepAliveTimeout, so an idle keep-alive connection is closed by that first, gracefully. */
export const REPLAY_IDLE_TIMEOUT_MS = 130_000;

/** Answers protocol errors, listens, and says where: `{ port, url }` (port 0 picks a free one). */
export async function start(server: RegistryServer, port: number, host: string, limits: ServerLimits = {}): Promise<{ port: number; url: string }> {
  answerProtocolErrors(server);
  const l = { ...DEFAULT_LIMITS, ...limits };
  // Let the client close idle connections first: with node's 5 s default, a client (containerd) that
  // reuses a connection just as the server drops it sees "unexpected EOF" on a PUT it cannot retry.
  // Go's transports keep idle connections for 90 s at most. (headersTimeout counts from a request's
  // first byte, not over the idle time between requests.)
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = l.headersTimeoutMs;
  server.requestTimeout = l.requestTimeoutMs;
  server.timeout = l.idleTimeoutMs;
  server.maxConnections = l.maxConnections;
  // node checks header and request timeouts every 30 s by default: a 1 s check keeps them close to what is set.
  // (a node option read when the server starts listening; not in @types/node)
  (server as RegistryServer & { connectionsCheckingInterval: number }).connectionsCheckingInterval = Math.min(1000, l.headersTimeoutMs);
  await listen(server, port, host);
  const actual = (server.address() as AddressInfo).port;
  return { port: actual, url: `${isTls(server) ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${actual}` };
}

/** Listens, turning "port in use" and friends into one clear message. */
export function listen(server: Server | RegistryServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      if (e.code === 'EADDRINUSE') reject(new UserError(`port ${port} on ${host} is already in use: stop what runs there, or pick another with --port`));
      else if (e.code === 'EACCES') reject(new UserError(`not allowed to listen on ${host}:${port}: pick a port above 1023 with --port`));
      else if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') reject(new UserError(`cannot listen on ${host}: no such local address; use --host 127.0.0.1`));
      else reject(e);
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}

/** An error the user can fix: the CLI prints its message alone, no stack trace. */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}
