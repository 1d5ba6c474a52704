// Load: 16 concurrent skopeo pulls of different tags and images through one recorder (from a real
// docker-registry), then one replayer serving those fixtures to 32 concurrent skopeo pulls plus 32
// concurrent raw HTTP pulls at once. Every byte is checked against its digest.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { loadFixtures, record, replay, ReplayServer } from '../../src';
import { checkDirImage, Harness, Image, pushImage, Registry } from '../harness';
import { allFiles, fixtureFiles, get, sha256, tempLeftovers } from '../support/reliability';

jest.setTimeout(180_000);

const MB = 1024 * 1024;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** A small reverse proxy in front of the registry that counts what the recorder asked upstream. */
function countingProxy(target: string): Promise<{ url: string; seen: string[]; close: () => Promise<void> }> {
  const seen: string[] = [];
  const t = new URL(target);
  const server = http.createServer((req, res) => {
    const up = http.request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host } },
      (ur) => {
        seen.push(`${req.method} ${req.url} ${ur.statusCode}`);
        res.writeHead(ur.statusCode ?? 502, ur.rawHeaders);
        ur.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      resolve({
        url: `http://127.0.0.1:${port}`,
        seen,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    }),
  );
}

/** Runs the jobs with at most `n` at a time. */
async function limit<T>(n: number, jobs: Array<() => Promise<T>>): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, jobs.length) }, async () => {
      while (next < jobs.length) {
        const i = next++;
        out[i] = await jobs[i]();
      }
    }),
  );
  return out;
}

/** A pull with plain HTTP: manifest (OCI Accept), then every blob, each hashed against its digest. */
async function rawPull(base: string, repo: string, tag: string, image: Image): Promise<void> {
  const m = await get(`${base}/v2/${repo}/manifests/${tag}`, { headers: { accept: OCI_MANIFEST } });
  if (m.status !== 200 || !m.complete) throw new Error(`manifest ${repo}:${tag}: ${m.status} ${m.error ?? ''}`);
  if (!m.body.equals(image.manifestBytes)) throw new Error(`manifest ${repo}:${tag}: bytes differ`);
  const manifest = JSON.parse(m.body.toString()) as { config: { digest: string; size: number }; layers: Array<{ digest: string; size: number }> };
  for (const d of [manifest.config, ...manifest.layers]) {
    const b = await get(`${base}/v2/${repo}/blobs/${d.digest}`);
    if (b.status !== 200 || !b.complete) throw new Error(`blob ${d.digest}: ${b.status} ${b.error ?? ''}`);
    if (b.body.length !== d.size) throw new Error(`blob ${d.digest}: ${b.body.length} bytes, expected ${d.size}`);
    if (sha256(b.body) !== d.digest) throw new Error(`blob ${d.digest}: content hashes to ${sha256(b.body)}`);
  }
}

describe('under load', () => {
  const h = new Harness();
  let reg: Registry;
  let images: Image[];
  /** 16 references: 10 distinct images, 6 of them again under another tag or in another repository */
  let pulls: Array<{ repo: string; tag: string; image: Image }>;
  let out: string;
  let upstreamSeen: string[] = [];
  let written: string[] = [];
  let replayer: ReplayServer;

  beforeAll(async () => {
    reg = await h.startRegistry({ mode: 'plain' });
    images = await Promise.all(
      Array.from({ length: 10 }, (_, i) => h.makeImage({ layers: i === 0 ? 2 : 1, layerSize: i === 0 ? 3 * MB : 128 * 1024, tag: `t${i}` })),
    );
    pulls = [
      ...images.map((image, i) => ({ repo: `load/i${i}`, tag: 'v1', image })),
      { repo: 'load/i0', tag: 'v2', image: images[0] }, // same repo, same blobs, another tag
      { repo: 'load/i1', tag: 'v2', image: images[1] },
      { repo: 'load/i5', tag: 'latest', image: images[5] },
      { repo: 'load/copy2', tag: 'v1', image: images[2] }, // same blobs in another repository
      { repo: 'load/copy3', tag: 'v1', image: images[3] },
      { repo: 'other/deep/i4', tag: 'v1', image: images[4] },
    ];
    await limit(4, pulls.map((p) => () => pushImage(p.image, `${reg.host}/${p.repo}:${p.tag}`)));
  });
  afterAll(async () => {
    await replayer?.close();
    await h.cleanup();
  });

  it('16 concurrent skopeo pulls through one recorder: all right, and every exchange recorded exactly once', async () => {
    const counter = await countingProxy(reg.url);
    h.onCleanup(counter.close);
    out = h.tempDir('load-fixtures');
    const failedLines: string[] = [];
    const rec = await record({ upstream: counter.url, out, port: 0, log: (l) => (/FAILED/.test(l) ? failedLines.push(l) : undefined) });
    h.onCleanup(() => rec.close());
    counter.seen.length = 0; // the recorder's start-up check of the upstream is not an exchange

    const results = await Promise.all(pulls.map((p) => h.pullToDir(`127.0.0.1:${rec.port}/${p.repo}:${p.tag}`)));
    results.forEach((r, i) => {
      const { manifestDigest } = checkDirImage(r.dir);
      expect(manifestDigest).toBe(pulls[i].image.manifestDigest);
    });
    await rec.close(); // waits for in-flight exchanges to be written
    upstreamSeen = [...counter.seen];
    written = rec.written();

    expect(failedLines).toEqual([]);
    // one fixture per exchange the upstream saw, no more, no less
    const files = fixtureFiles(out);
    expect(new Set(written.map((f) => path.basename(f))).size).toBe(written.length);
    expect(files.sort()).toEqual(written.map((f) => path.relative(out, f)).sort());
    const loaded = await loadFixtures([out]);
    // an answer given several times in a row is stored once with its count (`times`)
    const recorded = loaded.exchanges.flatMap((ex) => Array<string>(ex.times ?? 1).fill(`${ex.request.method} ${ex.request.url} ${ex.response?.status}`)).sort();
    expect(recorded).toEqual(upstreamSeen.sort());
    // each pull's manifest is there (once per pull of that reference), and each of its blobs for its repository
    for (const p of pulls) {
      const sameRef = pulls.filter((q) => q.repo === p.repo && q.tag === p.tag).length;
      expect(recorded.filter((r) => r.startsWith(`GET /v2/${p.repo}/manifests/${p.tag} 200`)).length).toBeGreaterThanOrEqual(sameRef);
      for (const d of [p.image.configDigest, ...p.image.layerDigests]) {
        expect(recorded.some((r) => r === `GET /v2/${p.repo}/blobs/${d} 200`)).toBe(true);
      }
    }
  });

  it('no temp files are left, and bodies/ holds exactly one file per distinct blob', () => {
    expect(tempLeftovers(out)).toEqual([]);
    const distinct = new Set(images.flatMap((i) => [i.configDigest, ...i.layerDigests]));
    const stored = allFiles(path.join(out, 'bodies'));
    expect(stored.map((f) => 'sha256:' + path.basename(f)).sort()).toEqual([...distinct].sort());
    expect(stored.every((f) => f.startsWith('sha256' + path.sep))).toBe(true);
    for (const f of stored) expect(sha256(fs.readFileSync(path.join(out, 'bodies', f)))).toBe('sha256:' + path.basename(f));
  });

  it('replaying the recording serves all 16 images (registry stopped)', async () => {
    await reg.stop();
    replayer = await replay({ fixtures: out, port: 0 });
    const results = await limit(8, pulls.map((p) => () => h.pullToDir(`127.0.0.1:${replayer.port}/${p.repo}:${p.tag}`)));
    results.forEach((r, i) => {
      expect(r.manifestBytes.equals(pulls[i].image.manifestBytes)).toBe(true);
      expect(checkDirImage(r.dir).manifestDigest).toBe(pulls[i].image.manifestDigest);
      h.tmp.remove(r.dir);
    });
    expect(replayer.unmatched()).toEqual([]);
  });

  it('one replayer, 32 concurrent skopeo pulls and 32 concurrent raw HTTP pulls at once: all byte-identical', async () => {
    const big = pulls[0]; // 2 layers of 3 MiB
    const skopeoPulls = Array.from({ length: 32 }, (_, i) => pulls[i % 2 === 0 ? 0 : i % 16]).map((p) => ({
      p,
      run: h.pullToDir(`127.0.0.1:${replayer.port}/${p.repo}:${p.tag}`),
    }));
    const rawPulls = Array.from({ length: 32 }, (_, i) => (i % 4 === 3 ? pulls[10 + (i % 6)] : big)).map((p) => rawPull(replayer.url, p.repo, p.tag, p.image));
    const [skopeoResults, rawResults] = await Promise.all([Promise.allSettled(skopeoPulls.map((s) => s.run)), Promise.allSettled(rawPulls)]);
    const failures = [...skopeoResults, ...rawResults].filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => String(r.reason));
    expect(failures).toEqual([]);
    skopeoResults.forEach((r, i) => {
      const { dir, manifestBytes } = (r as PromiseFulfilledResult<{ dir: string; manifestBytes: Buffer }>).value;
      expect(manifestBytes.equals(skopeoPulls[i].p.image.manifestBytes)).toBe(true);
      expect(checkDirImage(dir).manifestDigest).toBe(skopeoPulls[i].p.image.manifestDigest);
      h.tmp.remove(dir);
    });
    expect(replayer.unmatched()).toEqual([]);
    expect((await get(`${replayer.url}/v2/`)).status).toBe(200);
  });
});
