// A tiny scripted "registry" for reliability tests: a node http server on 127.0.0.1 whose answers
// the test chooses path by path (including misbehaviour: resets, hangs, slow headers, 503s).
// Large blobs are generated on the fly from a seed, never held in memory.
import { createHash, randomBytes } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A blob of `size` bytes made of a 1 MiB random block repeated, each MiB stamped with its index. */
export class GeneratedBlob {
  readonly size: number;
  readonly digest: string;
  private readonly block: Buffer;

  constructor(size: number, block = randomBytes(1024 * 1024)) {
    this.size = size;
    this.block = block;
    const h = createHash('sha256');
    for (const c of this.chunks()) h.update(c);
    this.digest = 'sha256:' + h.digest('hex');
  }

  get hex(): string {
    return this.digest.slice('sha256:'.length);
  }

  /** The bytes, 1 MiB at a time. */
  *chunks(): Generator<Buffer> {
    const n = this.block.length;
    for (let off = 0, i = 0; off < this.size; off += n, i++) {
      const c = Buffer.from(this.block.subarray(0, Math.min(n, this.size - off)));
      if (c.length >= 8) c.writeBigUInt64BE(BigInt(i), 0);
      yield c;
    }
  }

  /** Writes the blob with backpressure; stops quietly if the connection goes away. */
  async pipeTo(res: http.ServerResponse): Promise<void> {
    for (const c of this.chunks()) {
      if (res.destroyed) return;
      if (!res.write(c)) {
        await new Promise<void>((r) => {
          const done = (): void => {
            res.off('drain', done);
            res.off('close', done);
            r();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    }
    if (!res.destroyed) res.end();
  }
}

export const sha256hex = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

export class FakeUpstream {
  readonly server: http.Server;
  /** `METHOD url` of every request received, in order. */
  readonly requests: string[] = [];
  private readonly routes = new Map<string, Handler>();
  private readonly sockets = new Set<Socket>();
  url = '';
  port = 0;

  constructor() {
    this.server = http.createServer((req, res) => {
      this.requests.push(`${req.method} ${req.url}`);
      const h = this.routes.get(`${req.method} ${req.url}`) ?? (req.method === 'HEAD' ? this.routes.get(`GET ${req.url}`) : undefined);
      if (h) return h(req, res);
      const body = JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: `fake upstream: nothing at ${req.url}`, detail: null }] });
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    this.on('GET', '/v2/', (_req, res) => json(res, 200, '{}'));
  }

  static async start(): Promise<FakeUpstream> {
    const u = new FakeUpstream();
    await new Promise<void>((resolve) => u.server.listen(0, '127.0.0.1', resolve));
    u.port = (u.server.address() as AddressInfo).port;
    u.url = `http://127.0.0.1:${u.port}`;
    return u;
  }

  on(method: string, url: string, h: Handler): this {
    this.routes.set(`${method} ${url}`, h);
    return this;
  }

  /** Serves a generated blob (GET and HEAD). */
  blob(repo: string, blob: GeneratedBlob): string {
    const url = `/v2/${repo}/blobs/${blob.digest}`;
    this.on('GET', url, (req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.size, 'docker-content-digest': blob.digest });
      if (req.method === 'HEAD') return void res.end();
      void blob.pipeTo(res);
    });
    return url;
  }

  /** Serves fixed bytes as a blob. */
  bytes(url: string, body: Buffer, contentType = 'application/octet-stream'): string {
    this.on('GET', url, (req, res) => {
      res.writeHead(200, { 'content-type': contentType, 'content-length': body.length, 'docker-content-digest': 'sha256:' + sha256hex(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    return url;
  }

  /** Serves an OCI manifest (inline text when recorded). */
  manifest(repo: string, tag: string, body: string): string {
    return this.bytes(`/v2/${repo}/manifests/${tag}`, Buffer.from(body), 'application/vnd.oci.image.manifest.v1+json');
  }

  count(method: string, url: string): number {
    return this.requests.filter((r) => r === `${method} ${url}`).length;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

export function json(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0' });
  res.end(body);
}

/** A manifest-shaped JSON text naming the given blobs (not a valid image, but registry-shaped). */
export function manifestFor(config: { digest: string; size: number }, layers: Array<{ digest: string; size: number }>): string {
  return JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...l })),
  });
}
