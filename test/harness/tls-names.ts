// Stand-ins for public registries on loopback: a throw-away CA (openssl) that issues certificates for
// real names (ghcr.io, auth.docker.io, ...), and a TLS front that serves one of those names in front
// of an in-process http server (the token server, the blob CDN). Clients reach them only through
// regtape's forward proxy, which connects by `--resolve NAME=127.0.0.1:PORT`.
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import * as tls from 'tls';
import { run } from './run';

export interface TestCA {
  /** the CA certificate (PEM file): what the recorder trusts with --upstream-ca */
  certPath: string;
  /** a certificate for `name` (subjectAltName DNS:name) signed by this CA: PEM files */
  issue(name: string): Promise<{ cert: string; key: string }>;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const r = await run('openssl', args, { cwd, timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
}

export async function makeTestCA(dir: string): Promise<TestCA> {
  const certPath = path.join(dir, 'test-ca.pem');
  const keyPath = path.join(dir, 'test-ca.key');
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=regtape throw-away test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-keyout', keyPath, '-out', certPath], dir);
  let serial = 1;
  return {
    certPath,
    async issue(name: string) {
      const base = path.join(dir, name.replace(/[^A-Za-z0-9.-]/g, '_'));
      fs.writeFileSync(`${base}.ext`, `subjectAltName=DNS:${name}\nextendedKeyUsage=serverAuth\n`);
      await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${base}.key`, '-out', `${base}.csr`], dir);
      await openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', certPath, '-CAkey', keyPath, '-set_serial', String(++serial), '-days', '2', '-extfile', `${base}.ext`, '-out', `${base}.pem`], dir);
      return { cert: `${base}.pem`, key: `${base}.key` };
    },
  };
}

export interface TlsFront {
  port: number;
  /** connections accepted so far */
  connections: number;
  close(): Promise<void>;
}

/** A TLS server on 127.0.0.1 with this certificate, piping each connection to 127.0.0.1:targetPort. */
export async function tlsFront(cert: { cert: string; key: string }, targetPort: number): Promise<TlsFront> {
  const sockets = new Set<net.Socket>();
  const front: TlsFront = { port: 0, connections: 0, close: async () => undefined };
  const srv = tls.createServer({ cert: fs.readFileSync(cert.cert), key: fs.readFileSync(cert.key) }, (s) => {
    front.connections++;
    const up = net.connect(targetPort, '127.0.0.1');
    sockets.add(s).add(up);
    s.on('close', () => sockets.delete(s));
    up.on('close', () => sockets.delete(up));
    s.on('error', () => up.destroy());
    up.on('error', () => s.destroy());
    s.pipe(up).pipe(s);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  front.port = (srv.address() as net.AddressInfo).port;
  front.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      srv.close(() => resolve());
    });
  return front;
}

/** A TCP listener that only counts connections: stands where a stopped upstream was, to prove nobody came. */
export async function connectionCounter(port: number): Promise<{ connections: number; close(): Promise<void> }> {
  const counter = { connections: 0, close: async () => undefined as void };
  const srv = net.createServer((s) => {
    counter.connections++;
    s.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', resolve);
  });
  counter.close = () => new Promise<void>((resolve) => srv.close(() => resolve()));
  return counter;
}
