// Replay fidelity, tested the way a registry test suite does (issue 9, items 1, 2, 4, 6): a scripted
// sequence of registry operations (pushes with skopeo, monolithic uploads, a cross-repo mount, deletes,
// ranged GETs, HEADs, manifest GETs with and without Accept, tag lists) is run with plain HTTP and real
// clients through `regtape record` against docker-registry 2.8; the registry is stopped; the same
// script runs against `regtape replay`, and every answer must equal the recorded one byte for byte
// (status, the headers that carry meaning, body). Ranges are asked in another order at replay.
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { record, replay } from '../../src';
import { checkDirImage, Harness, Image, pushImage, skopeo } from '../harness';

jest.setTimeout(180_000);
const quiet = (): void => undefined;
const sha256 = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const sha512 = (b: Buffer): string => 'sha512:' + createHash('sha512').update(b).digest('hex');
const OCI = 'application/vnd.oci.image.manifest.v1+json';
const DOCKER = 'application/vnd.docker.distribution.manifest.v2+json';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The connection closed before the announced body was complete (docker-registry's 416). */
  aborted: boolean;
}

/** One request; never rejects on a cut body (the registry cuts its 416 answers short). */
function call(url: string, method: string, headers: Array<[string, string]> = [], body?: Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const flat = ['Host', new URL(url).host, ...headers.flat()];
    const req = http.request(url, { method, headers: flat, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let aborted = false;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('aborted', () => (aborted = true));
      res.on('error', () => (aborted = true));
      res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), aborted: aborted || !res.complete }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The headers a client acts on, with the server's own origin and per-run upload ids taken out. */
function meaningful(a: Answer, base: string): Record<string, string | string[] | undefined> {
  const h = a.headers;
  const loc = h.location?.split(base).join('<origin>').replace(/\/uploads\/[0-9a-f-]{36}/, '/uploads/<id>').replace(/_state=[^&]*/, '_state=<state>');
  return {
    'content-type': h['content-type'],
    'content-length': h['content-length'],
    'content-range': h['content-range'],
    'docker-content-digest': h['docker-content-digest'],
    etag: h.etag,
    location: loc,
    range: h.range,
    link: h.link,
    'accept-ranges': h['accept-ranges'],
  };
}

interface Step {
  label: string;
  answer: Answer;
}

/**
 * The script. `base` is the server's URL; `order` puts the ranged GETs in the order given. Returns
 * every answer by label. Real clients run inside it: a skopeo push, a skopeo copy between repositories.
 */
async function script(h: Harness, base: string, image: Image, blobs: { x: Buffer; y: Buffer; z: Buffer }, rangeOrder: string[]): Promise<Map<string, Answer>> {
  const host = new URL(base).host;
  const out = new Map<string, Answer>();
  const step = async (label: string, method: string, p: string, headers: Array<[string, string]> = [], body?: Buffer): Promise<Answer> => {
    const a = await call(p.startsWith('http') ? p : base + p, method, headers, body);
    out.set(label, a);
    return a;
  };
  const layer = image.layerDigests[0];

  // real clients: a push, then a copy between repositories of the same registry
  await pushImage(image, `${host}/suite/a:v1`);
  const copy = await skopeo(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${host}/suite/a:v1`, `docker://${host}/suite/b:v1`]);
  if (copy.code !== 0) throw new Error(`skopeo copy failed: ${copy.stderr}`);

  // manifests: negotiated as the registry does (item 4)
  const m = await step('manifest GET tag, OCI accept', 'GET', '/v2/suite/a/manifests/v1', [['accept', OCI]]);
  await step('manifest HEAD tag, OCI accept', 'HEAD', '/v2/suite/a/manifests/v1', [['accept', OCI]]);
  await step('manifest GET tag, no Accept', 'GET', '/v2/suite/a/manifests/v1');
  await step('manifest HEAD tag, no Accept', 'HEAD', '/v2/suite/a/manifests/v1');
  await step('manifest GET digest, no Accept', 'GET', `/v2/suite/a/manifests/${String(m.headers['docker-content-digest'])}`);
  await step('manifest GET tag, Docker accept only', 'GET', '/v2/suite/a/manifests/v1', [['accept', DOCKER]]);

  // the full layer (its body lands in the store), then ranges
  await step('layer GET', 'GET', `/v2/suite/a/blobs/${layer}`);
  for (const r of rangeOrder) await step(`layer GET ${r}`, 'GET', `/v2/suite/a/blobs/${layer}`, [['range', r]]);
  await step('layer HEAD bytes=0-9', 'HEAD', `/v2/suite/a/blobs/${layer}`, [['range', 'bytes=0-9']]);

  // a monolithic upload, then HEAD, DELETE, HEAD, GET (item 2: 200 202 404 404)
  const post = await step('x POST upload', 'POST', '/v2/suite/c/blobs/uploads/');
  const loc = String(post.headers.location);
  await step('x PUT', 'PUT', `${loc}${loc.includes('?') ? '&' : '?'}digest=${encodeURIComponent(sha256(blobs.x))}`, [['content-type', 'application/octet-stream']], blobs.x);
  await step('x HEAD', 'HEAD', `/v2/suite/c/blobs/${sha256(blobs.x)}`);
  await step('x DELETE', 'DELETE', `/v2/suite/c/blobs/${sha256(blobs.x)}`);
  await step('x HEAD after DELETE', 'HEAD', `/v2/suite/c/blobs/${sha256(blobs.x)}`);
  await step('x GET after DELETE', 'GET', `/v2/suite/c/blobs/${sha256(blobs.x)}`);

  // blobs named by their sha512 digest: what the registry says, whatever the upload did (regtape
  // cannot check a sha512 upload's bytes; the recorded answer decides)
  await step('z HEAD sha512 before upload', 'HEAD', `/v2/suite/c/blobs/${sha512(blobs.z)}`);
  const post2 = await step('z POST upload', 'POST', '/v2/suite/c/blobs/uploads/');
  const loc2 = String(post2.headers.location);
  await step('z PUT sha512', 'PUT', `${loc2}${loc2.includes('?') ? '&' : '?'}digest=${encodeURIComponent(sha512(blobs.z))}`, [['content-type', 'application/octet-stream']], blobs.z);
  await step('z HEAD sha512', 'HEAD', `/v2/suite/c/blobs/${sha512(blobs.z)}`);
  const post4 = await step('w POST upload', 'POST', '/v2/suite/c/blobs/uploads/');
  const loc4 = String(post4.headers.location);
  await step('w PUT wrong sha512', 'PUT', `${loc4}${loc4.includes('?') ? '&' : '?'}digest=${encodeURIComponent(sha512(blobs.x))}`, [['content-type', 'application/octet-stream']], blobs.z);
  await step('w HEAD sha512', 'HEAD', `/v2/suite/c/blobs/${sha512(blobs.x)}`);

  // a blob only ever fetched by range: its full body is never in the store
  const post3 = await step('y POST upload', 'POST', '/v2/suite/c/blobs/uploads/');
  const loc3 = String(post3.headers.location);
  await step('y PUT', 'PUT', `${loc3}${loc3.includes('?') ? '&' : '?'}digest=${encodeURIComponent(sha256(blobs.y))}`, [['content-type', 'application/octet-stream']], blobs.y);
  await step('y GET bytes=0-9', 'GET', `/v2/suite/c/blobs/${sha256(blobs.y)}`, [['range', 'bytes=0-9']]);

  // a cross-repo mount
  await step('mount POST', 'POST', `/v2/suite/d/blobs/uploads/?mount=${encodeURIComponent(layer)}&from=suite/a`);
  await step('mounted HEAD', 'HEAD', `/v2/suite/d/blobs/${layer}`);
  await step('mounted DELETE', 'DELETE', `/v2/suite/d/blobs/${layer}`);

  // tag lists, then a manifest delete and what follows it
  await step('tags a', 'GET', '/v2/suite/a/tags/list');
  await step('tags b n=1', 'GET', '/v2/suite/b/tags/list?n=1');
  const digestB = String((await step('b manifest GET', 'GET', '/v2/suite/b/manifests/v1', [['accept', OCI]])).headers['docker-content-digest']);
  await step('b manifest DELETE', 'DELETE', `/v2/suite/b/manifests/${digestB}`);
  await step('b manifest GET digest after DELETE', 'GET', `/v2/suite/b/manifests/${digestB}`, [['accept', OCI]]);
  await step('b manifest GET tag after DELETE', 'GET', '/v2/suite/b/manifests/v1', [['accept', OCI]]);
  await step('tags b after DELETE', 'GET', '/v2/suite/b/tags/list');

  // a real client pulls what is left
  const pulled = await h.pullToDir(`${host}/suite/a:v1`);
  checkDirImage(pulled.dir);
  return out;
}

const RANGES = ['bytes=0-9', 'bytes=100-109', 'bytes=5000-10000', 'bytes=0-1,1-3,10-12', 'bytes=9000-9999'];

describe('a registry test suite, recorded against docker-registry and replayed offline', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());
  let recorded: Map<string, Answer>;
  let replayed: Map<string, Answer>;
  let recBase = '';
  let replayBase = '';
  let fixtures = '';
  let replayer: Awaited<ReturnType<typeof replay>>;
  let image: Image;

  beforeAll(async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    image = await h.makeImage({ layers: 1, layerSize: 8000 });
    const blobs = { x: randomBytes(20_000), y: randomBytes(3000), z: randomBytes(1000) };
    fixtures = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    recBase = rec.url;
    recorded = await script(h, rec.url, image, blobs, RANGES);
    await rec.close();
    await reg.stop();
    replayer = await replay({ fixtures, port: 0 });
    h.onCleanup(() => replayer.close());
    replayBase = replayer.url;
    replayed = await script(h, replayer.url, image, blobs, [...RANGES].reverse());
  });

  it('every answer equals the recorded one: status, headers that matter, body', () => {
    const diffs: string[] = [];
    for (const [label, rec] of recorded) {
      const rep = replayed.get(label)!;
      const want = { status: rec.status, headers: meaningful(rec, recBase), body: rec.body.toString('base64') };
      const got = { status: rep.status, headers: meaningful(rep, replayBase), body: rep.body.toString('base64') };
      if (rec.aborted) {
        // docker-registry announces the whole blob's length on a 416 and closes: only the status is an answer
        if (rep.status !== rec.status) diffs.push(`${label}: status ${rep.status}, recorded ${rec.status}`);
        continue;
      }
      try {
        expect(got).toEqual(want);
      } catch {
        diffs.push(`${label}: replayed ${JSON.stringify(got).slice(0, 600)}\n   recorded ${JSON.stringify(want).slice(0, 600)}`);
      }
    }
    expect(diffs).toEqual([]);
    expect(replayer.unmatched()).toEqual([]);
  });

  it('the answers are the registry 2.8 ones the issue names', () => {
    const s = (label: string): number => replayed.get(label)!.status;
    expect(['x HEAD', 'x DELETE', 'x HEAD after DELETE', 'x GET after DELETE'].map(s)).toEqual([200, 202, 404, 404]);
    expect(s('z HEAD sha512 before upload')).toBe(404);
    expect([s('w PUT wrong sha512'), s('w HEAD sha512')]).toEqual([400, 404]);
    expect(s('manifest GET tag, no Accept')).toBe(404);
    expect(JSON.parse(replayed.get('manifest GET tag, no Accept')!.body.toString()).errors[0]).toMatchObject({ code: 'MANIFEST_UNKNOWN' });
    expect(s('layer GET bytes=5000-10000')).toBe(206);
    expect(replayed.get('layer GET bytes=5000-10000')!.headers['content-range']).toMatch(/^bytes 5000-\d+\/\d+$/);
    expect(s('layer GET bytes=9000-9999')).toBe(416);
    expect(s('b manifest GET digest after DELETE')).toBe(404);
  });

  it('a range never recorded is cut from the stored full body; without one it is unmatched, never another range', async () => {
    const layer = image.layerDigests[0];
    const full = replayed.get('layer GET')!.body;
    expect(sha256(full)).toBe(layer);
    const r = await call(`${replayBase}/v2/suite/a/blobs/${layer}`, 'GET', [['range', 'bytes=20-29']]);
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes 20-29/${full.length}`);
    expect(r.body.equals(full.subarray(20, 30))).toBe(true);
    const y = recorded.get('y GET bytes=0-9')!;
    expect(y.status).toBe(206);
    const url = `${replayBase}/v2/suite/c/blobs/${y.headers['docker-content-digest']}`;
    const other = await call(url, 'GET', [['range', 'bytes=10-19']]);
    expect(other.status).toBe(404);
    expect(other.headers['x-regtape']).toBe('unmatched');
    expect(JSON.parse(other.body.toString()).errors[0].message).toContain('Range (recorded for bytes=0-9, answered 206) differs');
    const whole = await call(url, 'GET');
    expect(whole.status).toBe(404);
    expect(whole.headers['x-regtape']).toBe('unmatched');
  });

  it('after a replayed DELETE, derived answers say 404 too; elsewhere the blob is still derived', async () => {
    const layer = image.layerDigests[0];
    const gone = await call(`${replayBase}/v2/suite/d/blobs/${layer}`, 'GET', [['range', 'bytes=0-3']]);
    expect(gone.status).toBe(404);
    expect(JSON.parse(gone.body.toString())).toEqual({ errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry', detail: layer }] });
    const kept = await call(`${replayBase}/v2/suite/a/blobs/${layer}`, 'GET', [['range', 'bytes=0-3']]);
    expect(kept.status).toBe(206);
    expect(kept.body.equals(replayed.get('layer GET')!.body.subarray(0, 4))).toBe(true);
  });

  it('the store holds every body under its own sha256: a recorded 206 never stands for the blob', () => {
    const dir = path.join(fixtures, 'bodies', 'sha256');
    const names = fs.readdirSync(dir);
    expect(names.length).toBeGreaterThan(0);
    for (const hex of names) expect(sha256(fs.readFileSync(path.join(dir, hex)))).toBe(`sha256:${hex}`);
    // a partial answer (10 bytes of gzip: binary, so in the store) is stored under its own digest
    const partial = recorded.get('layer GET bytes=100-109')!.body;
    expect(partial.length).toBe(10);
    expect(names).toContain(sha256(partial).slice('sha256:'.length));
  });
});
