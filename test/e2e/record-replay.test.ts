// The spine: a real client pulls through `record` from a real registry; the registry is stopped;
// the same client pulls from `replay` and gets the very same bytes.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { record, replay, ReplayServer } from '../../src';
import { checkDirImage, dockerManifestInspect, Harness, Image, Registry, pushImage, skopeo } from '../harness';
import { listFiles } from '../support/secrets';
import { rawExchange, request, TLS_CLIENT_HELLO } from '../support/http';

jest.setTimeout(120_000);

const quiet = (): void => undefined;

describe.each(['md', 'yaml'] as const)('record a pull, replay it offline (%s fixtures)', (format) => {
  const h = new Harness();
  let reg: Registry;
  let image: Image;
  let fixtures: string;
  let again: string;
  let inspectRecorded: string;
  let replayer: ReplayServer;
  const repo = 'demo/hello';

  beforeAll(async () => {
    reg = await h.startRegistry({ mode: 'plain' });
    image = await h.makeImage({ layers: 2, layerSize: 300 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/${repo}:v1`);
    fixtures = h.tempDir('fixtures');
    again = h.tempDir('fixtures-again');

    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, format, log: quiet });
    h.onCleanup(() => rec.close());
    const pulled = await h.pullToDir(`127.0.0.1:${rec.port}/${repo}:v1`);
    checkDirImage(pulled.dir);
    const inspect = await dockerManifestInspect(`127.0.0.1:${rec.port}/${repo}:v1`);
    expect(inspect.code).toBe(0);
    inspectRecorded = inspect.stdout;
    await rec.close();

    // A second recording of the same pull, into another folder.
    const rec2 = await record({ upstream: reg.url, out: again, port: 0, format, log: quiet });
    h.onCleanup(() => rec2.close());
    await h.pullToDir(`127.0.0.1:${rec2.port}/${repo}:v1`);
    await rec2.close();

    await reg.stop(); // from here on, no upstream
    replayer = await replay({ fixtures, port: 0 });
    h.onCleanup(() => replayer.close());
  });
  afterAll(() => h.cleanup());

  it('wrote readable fixtures and stored each blob once, by digest', () => {
    const files = listFiles(fixtures);
    const ext = format === 'md' ? '.md' : '.yaml';
    // fixtures, the body store, and the .gitattributes that keeps layers out of diffs
    expect(files.filter((f) => !f.startsWith('bodies') && f !== '.gitattributes').every((f) => f.endsWith(ext))).toBe(true);
    expect(fs.readFileSync(path.join(fixtures, '.gitattributes'), 'utf8')).toContain('bodies/** binary -diff');
    expect(files).toContain(`GET_v2.7e186c08${ext}`);
    // every layer and the config are in the store under their digest, nothing else is
    const stored = files.filter((f) => f.startsWith('bodies/')).map((f) => 'sha256:' + path.basename(f));
    expect(stored.sort()).toEqual([...image.layerDigests, image.configDigest].sort());
    // the manifest stands inline, verbatim
    const manifestFixture = files.find((f) => f.startsWith('GET_demo_hello_manifests_v1'))!;
    expect(fs.readFileSync(path.join(fixtures, manifestFixture), 'utf8')).toContain(image.manifestBytes.toString());
  });

  it('two recordings of the same pull produce the same file set', () => {
    const skopeoOnly = listFiles(again);
    const first = listFiles(fixtures);
    for (const f of skopeoOnly) expect(first).toContain(f);
    expect(skopeoOnly.filter((f) => f.startsWith('bodies/')).length).toBe(3);
  });

  it('skopeo pulls the same bytes from replay, with the registry stopped', async () => {
    const pulled = await h.pullToDir(`127.0.0.1:${replayer.port}/${repo}:v1`);
    const { manifestDigest, blobs } = checkDirImage(pulled.dir); // every blob's sha256 equals its digest
    expect(pulled.manifestBytes.equals(image.manifestBytes)).toBe(true);
    expect(manifestDigest).toBe(image.manifestDigest);
    expect(blobs.sort()).toEqual([...image.layerDigests, image.configDigest].sort());
    // and a second replayed pull is identical, file for file
    const second = await h.pullToDir(`127.0.0.1:${replayer.port}/${repo}:v1`);
    for (const f of fs.readdirSync(pulled.dir)) {
      expect(fs.readFileSync(path.join(second.dir, f)).equals(fs.readFileSync(path.join(pulled.dir, f)))).toBe(true);
    }
    expect(replayer.unmatched()).toEqual([]);
  });

  it('docker manifest inspect (TLS probe first) gets what it got live', async () => {
    const r = await dockerManifestInspect(`127.0.0.1:${replayer.port}/${repo}:v1`);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(inspectRecorded);
  });

  it('a request with no fixture fails loudly, naming it and the nearest recording', async () => {
    const r = await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://127.0.0.1:${replayer.port}/${repo}:v2`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('no fixture for GET /v2/demo/hello/manifests/v2');
    expect(r.stderr).toContain('GET /v2/demo/hello/manifests/v1');
    expect(replayer.unmatched().map((m) => m.request)).toContain('GET /v2/demo/hello/manifests/v2');
    // and the server keeps serving
    expect((await request(`${replayer.url}/v2/`)).status).toBe(200);
  });

  it('HEAD of a manifest is answered from its recorded GET, digest and length included', async () => {
    const r = await request(`${replayer.url}/v2/${repo}/manifests/v1`, { method: 'HEAD', headers: [['accept', 'application/vnd.oci.image.manifest.v1+json']] });
    expect(r.status).toBe(200);
    expect(r.headers['docker-content-digest']).toBe(image.manifestDigest);
    expect(r.headers['content-length']).toBe(String(image.manifestBytes.length));
    expect(r.body.length).toBe(0);
  });
});

describe('the recorder', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('answers a TLS ClientHello with HTTP 400 and keeps proxying; an aborted download leaves no fixture', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 1, layerSize: 8 * 1024 * 1024 });
    await pushImage(image, `${reg.host}/big/img:v1`);
    const out = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    expect(await rawExchange(rec.port, TLS_CLIENT_HELLO)).toMatch(/^HTTP\/1\.1 400 /);

    // a client that goes away in the middle of a layer
    const http = await import('node:http');
    await new Promise<void>((resolve) => {
      const req = http.get(`${rec.url}/v2/big/img/blobs/${image.layerDigests[0]}`, (res) => {
        res.once('data', () => {
          req.destroy();
          resolve();
        });
      });
      req.on('error', () => resolve());
    });
    const ok = await request(`${rec.url}/v2/`);
    expect(ok.status).toBe(200);
    await rec.close();
    const files = listFiles(out);
    expect(files).toEqual(['.gitattributes', 'GET_v2.7e186c08.md']); // the aborted blob left no fixture and no stored body
  });

  it('refuses an unreachable upstream with one clear message', async () => {
    const { freePort } = await import('../harness');
    const port = await freePort();
    await expect(record({ upstream: `http://127.0.0.1:${port}`, out: h.tempDir('x'), port: 0 })).rejects.toThrow(
      `upstream http://127.0.0.1:${port} is unreachable (ECONNREFUSED): check --upstream and the network`,
    );
  });
});
