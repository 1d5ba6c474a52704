// verify and ls over real recordings: skopeo pulls through `record` from docker-registry, then the
// folder is checked, damaged in one place, and checked again.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { record } from '../../src';
import { formatListing, formatReport, ls, verify } from '../../src/inspect';
import { checkDirImage, Harness, Image, pushImage } from '../harness';

jest.setTimeout(120_000);

const quiet = (): void => undefined;
const rel = (f: string): string => path.relative(process.cwd(), f);

/** A copy of a recorded folder, to damage. */
function copyOf(h: Harness, dir: string): string {
  const out = h.tempDir('fixtures-copy');
  fs.cpSync(dir, out, { recursive: true });
  return out;
}

const bodyPath = (dir: string, digest: string): string => path.join(dir, 'bodies', 'sha256', digest.slice('sha256:'.length));

/** The fixture files of GETs of that blob from that repository. */
function blobFixtures(dir: string, repo: string, digest: string): string[] {
  const prefix = `GET_${repo.replace(/\//g, '_')}_blobs_sha256-${digest.slice(7, 19)}.`;
  return fs.readdirSync(dir).filter((f) => f.startsWith(prefix)).map((f) => path.join(dir, f));
}

describe('verify a recorded skopeo pull (plain registry)', () => {
  const h = new Harness();
  let image: Image;
  let fixtures: string;
  const repo = 'demo/hello';

  beforeAll(async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    image = await h.makeImage({ layers: 2, layerSize: 300 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/${repo}:v1`);
    fixtures = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    checkDirImage((await h.pullToDir(`127.0.0.1:${rec.port}/${repo}:v1`)).dir);
    await rec.close();
    await reg.stop();
  });
  afterAll(() => h.cleanup());

  it('a fresh recording verifies with no problems', async () => {
    const report = await verify([fixtures]);
    expect(report.problems).toEqual([]);
    expect(report.bodies).toBe(3); // config and two layers
    expect(report.exchanges).toBeGreaterThanOrEqual(5);
    expect(report.files).toBe(report.exchanges);
    expect(formatReport(report)).toBe(`verified ${report.files} fixtures (${report.exchanges} exchanges, 3 bodies): 0 problems\n`);
  });

  it('one flipped byte in a stored layer: exactly one sha256 problem, on that layer', async () => {
    const dir = copyOf(h, fixtures);
    const layer = image.layerDigests[1];
    const p = bodyPath(dir, layer);
    const fd = fs.openSync(p, 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, 1234);
    b[0] ^= 0x20;
    fs.writeSync(fd, b, 0, 1, 1234);
    fs.closeSync(fd);

    const report = await verify([dir]);
    const [layerFixture] = blobFixtures(dir, repo, layer);
    expect(report.problems).toEqual([{ file: rel(layerFixture), line: expect.any(Number), kind: 'body-sha256', message: expect.any(String) }]);
    expect(report.problems[0].message).toMatch(new RegExp(`^body ${layer} \\(.*bodies/sha256/${layer.slice(7)}\\): sha256 mismatch, its bytes hash to sha256:[0-9a-f]{64}`));
    expect(formatReport(report)).toMatch(/: 1 problem\n$/);
  });

  it("a layer's blob fixture and body deleted: the completeness problem", async () => {
    const dir = copyOf(h, fixtures);
    const layer = image.layerDigests[0];
    const files = blobFixtures(dir, repo, layer);
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) fs.rmSync(f);
    fs.rmSync(bodyPath(dir, layer));

    const report = await verify([dir]);
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]).toMatchObject({
      kind: 'incomplete',
      message: `layer ${layer} of demo/hello:v1 is not in the recording: a pull would fail offline`,
    });
    expect(path.basename(report.problems[0].file)).toMatch(/^GET_demo_hello_manifests_v1\./);
  });

  it('ls lists the repository, its tag, the manifest digest and the blobs with their sizes', async () => {
    const listing = await ls([fixtures]);
    expect(listing.repositories.map((r) => r.name)).toEqual([repo]);
    const r = listing.repositories[0];
    expect(r.tags).toEqual([{ tag: 'v1', digest: image.manifestDigest, mediaType: 'application/vnd.oci.image.manifest.v1+json' }]);
    expect(r.manifests).toEqual([{ digest: image.manifestDigest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: image.manifestBytes.length }]);
    const expected = [...image.layerDigests, image.configDigest].map((d) => ({ digest: d, size: image.blobs.get(d)!, stored: true }));
    expect(r.blobs).toEqual(expected.sort((a, b) => (a.digest < b.digest ? -1 : 1)));
    expect(listing.totals.storedBytes).toBe(expected.reduce((n, b) => n + b.size, 0));

    const text = formatListing(listing);
    expect(text).toContain(`${repo}  (1 tag, 1 manifest, 3 blobs, `);
    expect(text).toMatch(new RegExp(`\\n  tag +v1 +${image.manifestDigest} `));
    for (const b of expected) expect(text).toMatch(new RegExp(`\\n  blob +${b.digest} +${b.size} B.* stored\\n`));
  });
});

describe('verify a recorded skopeo pull (Hub-like registry: token, blobs redirected to a CDN)', () => {
  const h = new Harness();
  let image: Image;
  let fixtures: string;
  const repo = 'library/alpine';

  beforeAll(async () => {
    const reg = await h.startRegistry({ mode: 'hub' });
    image = await h.makeImage({ layers: 1, layerSize: 200 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/${repo}:v1`, 'alice:alicepw');
    fixtures = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    checkDirImage((await h.pullToDir(`127.0.0.1:${rec.port}/${repo}:v1`, 'bob:bobpw')).dir);
    await rec.close();
    await reg.stop();
  });
  afterAll(() => h.cleanup());

  it('verifies clean; the blobs are in the recording through their redirects', async () => {
    expect(fs.readdirSync(fixtures).some((f) => f.startsWith('GET_redirect_'))).toBe(true);
    const report = await verify([fixtures]);
    expect(report.problems).toEqual([]);
    const listing = await ls([fixtures]);
    const r = listing.repositories.find((x) => x.name === repo)!;
    expect(r.blobs.map((b) => [b.digest, b.stored])).toEqual([...image.layerDigests, image.configDigest].sort().map((d) => [d, true]));
  });

  it("the CDN follow-up of a layer deleted (the 307 left): the completeness problem", async () => {
    const dir = copyOf(h, fixtures);
    const layer = image.layerDigests[0];
    const followUps = fs.readdirSync(dir).filter((f) => f.startsWith('GET_redirect_') && fs.readFileSync(path.join(dir, f), 'utf8').includes(layer.slice(7)));
    expect(followUps.length).toBeGreaterThan(0);
    for (const f of followUps) fs.rmSync(path.join(dir, f));
    fs.rmSync(bodyPath(dir, layer));
    expect(blobFixtures(dir, repo, layer).length).toBeGreaterThan(0); // the 307 is still there

    const report = await verify([dir]);
    expect(report.problems.map((p) => [p.kind, p.message])).toEqual([['incomplete', `layer ${layer} of ${repo}:v1 is not in the recording: a pull would fail offline`]]);
  });
});
