// The recorder's fast path for blob GETs by digest (src/record/blob-stream.ts): bodies stream on a plain
// socket and are hashed and written by a worker thread. What it must keep: the client gets the exact
// bytes; a body is stored only under its verified digest; a body that does not match its digest is
// neither stored nor recorded, and the client never gets it whole; a client that goes away mid-blob
// leaves no body and no fixture; answers it does not stream (redirects, errors) are recorded as before.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { record } from '../../src';
import { checkDirImage, freePort, Harness, pushImage } from '../harness';
import { listFiles } from '../support/secrets';
import { request } from '../support/http';

jest.setTimeout(120_000);

const sha = (b: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(b).digest('hex');

/** GET through node's client: status, headers, and the body (or the error that cut it). */
function get(url: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer; error?: string }> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', (e) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), error: e.message }));
      res.on('aborted', () => undefined);
    });
    req.on('error', (e) => resolve({ status: 0, headers: {}, body: Buffer.alloc(0), error: e.message }));
  });
}

/**
 * A tiny upstream that answers every blob GET with `body` (whatever digest the URL names), like a
 * registry whose storage went bad, and `/v2/` with 200.
 */
async function lyingUpstream(h: Harness, body: Buffer): Promise<string> {
  const port = await freePort();
  const server = http.createServer((req, res) => {
    if (req.url === '/v2/') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
      return void res.end('{}');
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  h.onCleanup(() => new Promise<void>((r) => server.close(() => r())));
  return `http://127.0.0.1:${port}`;
}

describe('recording blob GETs on the fast path', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('a pull through record stores each blob under its verified digest and replays byte for byte', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 2, layerSize: 3 * 1024 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/fast/img:v1`);
    const out = h.tempDir('fixtures');
    const lines: string[] = [];
    const rec = await record({ upstream: reg.url, out, port: 0, log: (l) => lines.push(l) });
    h.onCleanup(() => rec.close());
    const pulled = await h.pullToDir(`127.0.0.1:${rec.port}/fast/img:v1`);
    checkDirImage(pulled.dir);
    await rec.close();
    const stored = listFiles(out).filter((f) => f.startsWith('bodies/'));
    expect(stored.map((f) => 'sha256:' + path.basename(f)).sort()).toEqual([...image.layerDigests, image.configDigest].sort());
    for (const f of stored) expect(sha(fs.readFileSync(path.join(out, f)))).toBe('sha256:' + path.basename(f));
    // every blob GET was recorded, none failed
    expect(lines.filter((l) => / FAILED /.test(l))).toEqual([]);
    for (const d of image.layerDigests) expect(lines.some((l) => l.includes(`/blobs/${d} 200`))).toBe(true);
  });

  it('a body that does not match its digest is not stored, not recorded, and never reaches the client whole', async () => {
    const body = crypto.randomBytes(2 * 1024 * 1024 + 17);
    const upstream = await lyingUpstream(h, body);
    const out = h.tempDir('fixtures');
    const lines: string[] = [];
    const rec = await record({ upstream, out, port: 0, log: (l) => lines.push(l) });
    h.onCleanup(() => rec.close());
    const named = 'sha256:' + '0'.repeat(64); // not the digest of `body`
    const r = await get(`${rec.url}/v2/some/repo/blobs/${named}`);
    expect(r.status).toBe(200);
    expect(r.body.length).toBeLessThan(body.length); // cut short: the last chunk was held back
    expect(r.error ?? 'aborted').toBeTruthy();
    await rec.close();
    expect(listFiles(out).filter((f) => f !== '.gitattributes')).toEqual([]); // no fixture, no body, no temp file
    expect(lines.some((l) => l.includes('FAILED body does not match its digest'))).toBe(true);

    // the same bytes asked for by their true digest: passed on whole, stored, recorded
    const out2 = h.tempDir('fixtures2');
    const rec2 = await record({ upstream, out: out2, port: 0, log: () => undefined });
    h.onCleanup(() => rec2.close());
    const ok = await get(`${rec2.url}/v2/some/repo/blobs/${sha(body)}`);
    expect(ok.status).toBe(200);
    expect(sha(ok.body)).toBe(sha(body));
    await rec2.close();
    const files = listFiles(out2);
    expect(files).toContain(`bodies/sha256/${sha(body).slice(7)}`);
    expect(files.filter((f) => f.endsWith('.md'))).toHaveLength(1);
  });

  it('a client that goes away mid-blob leaves no body and no fixture, and the recorder goes on', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 1, layerSize: 24 * 1024 * 1024 });
    await pushImage(image, `${reg.host}/big/img:v1`);
    const out = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out, port: 0, log: () => undefined });
    h.onCleanup(() => rec.close());
    // read a little, then cut the connection
    await new Promise<void>((resolve) => {
      const s = net.connect(rec.port, '127.0.0.1', () => s.write(`GET /v2/big/img/blobs/${image.layerDigests[0]} HTTP/1.1\r\nHost: 127.0.0.1:${rec.port}\r\n\r\n`));
      let got = 0;
      s.on('data', (c: Buffer) => {
        got += c.length;
        if (got > 256 * 1024) {
          s.destroy();
          resolve();
        }
      });
      s.on('error', () => resolve());
      s.on('close', () => resolve());
    });
    const ok = await request(`${rec.url}/v2/`);
    expect(ok.status).toBe(200);
    await rec.close();
    expect(listFiles(out).filter((f) => f !== '.gitattributes')).toEqual(['GET_v2.7e186c08.md']);
  });

  it('answers it does not stream (a 404 for an unknown blob) are recorded as before', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const out = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out, port: 0, log: () => undefined });
    h.onCleanup(() => rec.close());
    const missing = 'sha256:' + 'a'.repeat(64);
    const r = await get(`${rec.url}/v2/no/such/blobs/${missing}`);
    expect(r.status).toBe(404);
    expect(r.body.toString()).toMatch(/BLOB_UNKNOWN|NAME_UNKNOWN/);
    await rec.close();
    const md = listFiles(out).filter((f) => f.endsWith('.md'));
    expect(md).toHaveLength(1);
    const text = fs.readFileSync(path.join(out, md[0]), 'utf8');
    expect(text).toMatch(/status 404/);
    expect(text).toMatch(/BLOB_UNKNOWN|NAME_UNKNOWN/);
  });
});
