import * as net from 'net';

/** A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('freePort: no TCP address'));
        return;
      }
      const port = addr.port;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

function tryConnect(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host });
    const done = (ok: boolean): void => {
      sock.removeAllListeners();
      sock.on('error', () => undefined);
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** One connection attempt: does 127.0.0.1:port accept connections right now? */
export function isPortOpen(port: number): Promise<boolean> {
  return tryConnect(port, '127.0.0.1');
}

/**
 * Resolve once 127.0.0.1:port accepts a TCP connection; reject after timeoutMs.
 * `abort` (optional) is polled too: if it returns an Error, waiting stops with that error
 * (used to fail fast when the process that should open the port has died).
 */
export async function waitForPort(port: number, timeoutMs = 10000, abort?: () => Error | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const err = abort?.();
    if (err) throw err;
    if (await tryConnect(port, '127.0.0.1')) return;
    if (Date.now() >= deadline) throw new Error(`port 127.0.0.1:${port} did not open within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
