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

/** Answers protocol errors, listens, and says where: `{ port, url }` (port 0 picks a free one). */
export async function start(server: RegistryServer, port: number, host: string): Promise<{ port: number; url: string }> {
  answerProtocolErrors(server);
  // Let the client close idle connections first: with node's 5 s default, a client (containerd) that
  // reuses a connection just as the server drops it sees "unexpected EOF" on a PUT it cannot retry.
  // Go's transports keep idle connections for 90 s at most.
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 125_000;
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
