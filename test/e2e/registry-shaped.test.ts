// Replay behaves like a registry that holds what was recorded: HEAD, by-digest, Range, 304, tag
// pagination, and pushes (the same content succeeds, different content fails saying which digest).
import { createHash } from 'node:crypto';
import { record, replay, ReplayServer } from '../../src';
import { dockerManifestInspect, Harness, Image, pushImage, skopeo } from '../harness';
import { request } from '../support/http';

jest.setTimeout(120_000);
const quiet = (): void => undefined;
const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const OCI = 'application/vnd.oci.image.manifest.v1+json';

describe('registry-shaped replay from a skopeo recording', () => {
  const h = new Harness();
  let image: Image;
  let replayer: ReplayServer;
  let layer: Buffer;
  const repo = 'shape/img';

  beforeAll(async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    image = await h.makeImage({ layers: 1, layerSize: 100 * 1024 });
    for (const tag of ['a', 'b', 'c', 'd', 'e']) await pushImage(image, `${reg.host}/${repo}:${tag}`);
    const fixtures = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    await h.pullToDir(`127.0.0.1:${rec.port}/${repo}:a`);
    const tags = await skopeo(['list-tags', '--tls-verify=false', `docker://127.0.0.1:${rec.port}/${repo}`]);
    expect(JSON.parse(tags.stdout).Tags.sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
    await rec.close();
    await reg.stop();
    replayer = await replay({ fixtures, port: 0 });
    h.onCleanup(() => replayer.close());
    const full = await request(`${replayer.url}/v2/${repo}/blobs/${image.layerDigests[0]}`);
    layer = full.body;
    expect(sha(layer)).toBe(image.layerDigests[0]);
  });
  afterAll(() => h.cleanup());

  it('serves a manifest recorded by tag also by its digest, with the same bytes and headers', async () => {
    const r = await request(`${replayer.url}/v2/${repo}/manifests/${image.manifestDigest}`, { headers: [['accept', OCI]] });
    expect(r.status).toBe(200);
    expect(r.body.equals(image.manifestBytes)).toBe(true);
    expect(r.headers['docker-content-digest']).toBe(image.manifestDigest);
    expect(r.headers['content-type']).toBe(OCI);
    const head = await request(`${replayer.url}/v2/${repo}/manifests/${image.manifestDigest}`, { method: 'HEAD', headers: [['accept', OCI]] });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(image.manifestBytes.length));
    expect(head.body.length).toBe(0);
    // a client that does not accept the stored type gets no manifest
    const docker = await request(`${replayer.url}/v2/${repo}/manifests/${image.manifestDigest}`, { headers: [['accept', 'application/vnd.docker.distribution.manifest.v2+json']] });
    expect(docker.status).toBe(404);
  });

  it('docker manifest inspect works from this skopeo-only recording', async () => {
    const before = replayer.unmatched().length;
    const r = await dockerManifestInspect(`127.0.0.1:${replayer.port}/${repo}:a`);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).config.digest).toBe(image.configDigest);
    expect(replayer.unmatched().slice(before)).toEqual([]);
  });

  it('answers HEAD of a blob from its recorded GET', async () => {
    const r = await request(`${replayer.url}/v2/${repo}/blobs/${image.layerDigests[0]}`, { method: 'HEAD' });
    expect(r.status).toBe(200);
    expect(r.headers['content-length']).toBe(String(layer.length));
    expect(r.headers['docker-content-digest']).toBe(image.layerDigests[0]);
    expect(r.body.length).toBe(0);
  });

  it('Range: a-b, a-, suffix, several ranges, unsatisfiable', async () => {
    const url = `${replayer.url}/v2/${repo}/blobs/${image.layerDigests[0]}`;
    const size = layer.length;
    const one = await request(url, { headers: [['range', 'bytes=500-1499']] });
    expect(one.status).toBe(206);
    expect(one.headers['content-range']).toBe(`bytes 500-1499/${size}`);
    expect(one.headers['content-length']).toBe('1000');
    expect(one.body.equals(layer.subarray(500, 1500))).toBe(true);

    const open = await request(url, { headers: [['range', 'bytes=1000-']] });
    expect(open.status).toBe(206);
    expect(open.body.equals(layer.subarray(1000))).toBe(true);

    const suffix = await request(url, { headers: [['range', 'bytes=-100']] });
    expect(suffix.headers['content-range']).toBe(`bytes ${size - 100}-${size - 1}/${size}`);
    expect(suffix.body.equals(layer.subarray(size - 100))).toBe(true);

    const multi = await request(url, { headers: [['range', 'bytes=0-9,20-29']] });
    expect(multi.status).toBe(206);
    const ct = String(multi.headers['content-type']);
    expect(ct).toMatch(/^multipart\/byteranges; boundary=/);
    const boundary = ct.split('boundary=')[1];
    const text = multi.body.toString('latin1');
    expect(multi.body.length).toBe(Number(multi.headers['content-length']));
    const parts = text.split(`--${boundary}`).slice(1, -1);
    expect(parts).toHaveLength(2);
    expect(parts[0]).toContain(`Content-Range: bytes 0-9/${size}`);
    expect(Buffer.from(parts[0].split('\r\n\r\n')[1].replace(/\r\n$/, ''), 'latin1').equals(layer.subarray(0, 10))).toBe(true);
    expect(Buffer.from(parts[1].split('\r\n\r\n')[1].replace(/\r\n$/, ''), 'latin1').equals(layer.subarray(20, 30))).toBe(true);

    const bad = await request(url, { headers: [['range', `bytes=${size + 10}-`]] });
    expect(bad.status).toBe(416);
    expect(bad.headers['content-range']).toBe(`bytes */${size}`);
  });

  it('If-None-Match with the ETag: 304', async () => {
    const url = `${replayer.url}/v2/${repo}/manifests/a`;
    const first = await request(url, { headers: [['accept', OCI]] });
    const etag = String(first.headers.etag);
    expect(etag).toBe(`"${image.manifestDigest}"`);
    const again = await request(url, { headers: [['accept', OCI], ['if-none-match', etag]] });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
  });

  it('tag lists paginate with n and last, with a Link header on the replayer', async () => {
    const p1 = await request(`${replayer.url}/v2/${repo}/tags/list?n=2`);
    expect(JSON.parse(p1.body.toString())).toEqual({ name: repo, tags: ['a', 'b'] });
    expect(p1.headers.link).toBe(`</v2/${repo}/tags/list?last=b&n=2>; rel="next"`);
    const p3 = await request(`${replayer.url}/v2/${repo}/tags/list?n=2&last=d`);
    expect(JSON.parse(p3.body.toString())).toEqual({ name: repo, tags: ['e'] });
    expect(p3.headers.link).toBeUndefined();
    // skopeo follows the Links
    const r = await skopeo(['list-tags', '--tls-verify=false', `docker://127.0.0.1:${replayer.port}/${repo}`]);
    expect(JSON.parse(r.stdout).Tags.sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
  });
});

describe('pushes', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('skopeo: a recorded push replays offline; a push of different content fails naming the digest', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 2, layerSize: 300 * 1024 });
    const other = await h.makeImage({ layers: 2, layerSize: 300 * 1024 });
    const fixtures = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    await pushImage(image, `127.0.0.1:${rec.port}/pushed/img:v1`);
    await rec.close();
    await reg.stop();

    const replayer = await replay({ fixtures, port: 0 });
    h.onCleanup(() => replayer.close());
    const same = await pushImage(image, `127.0.0.1:${replayer.port}/pushed/img:v1`);
    expect(same.digest).toBe(image.manifestDigest);
    // pushed blobs exist afterwards (state within a run)
    const head = await request(`${replayer.url}/v2/pushed/img/blobs/${image.layerDigests[0]}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    // and twice in one run works too
    await pushImage(image, `127.0.0.1:${replayer.port}/pushed/img:v1`);

    await expect(pushImage(other, `127.0.0.1:${replayer.port}/pushed/img:v1`)).rejects.toThrow(
      new RegExp(`pushed blob ${other.layerDigests[0]}|pushed blob ${other.layerDigests[1]}|pushed blob ${other.configDigest}`),
    );
  });

  it('bytes that do not hash to the digest parameter are refused', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 1, layerSize: 10 * 1024 });
    const fixtures = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    await pushImage(image, `127.0.0.1:${rec.port}/p/x:v1`);
    await rec.close();
    await reg.stop();
    const replayer = await replay({ fixtures, port: 0 });
    h.onCleanup(() => replayer.close());
    const post = await request(`${replayer.url}/v2/p/x/blobs/uploads/`, { method: 'POST' });
    expect(post.status).toBe(202);
    const location = String(post.headers.location);
    expect(location.startsWith(`${replayer.url}/v2/p/x/blobs/uploads/`)).toBe(true);
    expect(location).not.toContain('<upload');
    const put = await request(`${location}&digest=${encodeURIComponent(image.layerDigests[0])}`, { method: 'PUT', body: Buffer.from('not the layer') });
    expect(put.status).toBe(400);
    expect(JSON.parse(put.body.toString()).errors[0]).toMatchObject({ code: 'DIGEST_INVALID' });
    expect(put.body.toString()).toContain(`but the digest parameter says ${image.layerDigests[0]}`);
  });
});
