// Item: the proxy's own origin never leaks. go-containerregistry's cross-repo mount carries
// `origin=<registry host>`; through regtape that is regtape's own address. No installed client sends
// `origin=` (skopeo, podman, dockerd and ctr mount with `from=` only), so the mount is driven with a
// plain HTTP request as go-containerregistry sends it, against a real docker-registry: recorded as the
// placeholder, sent upstream as the upstream's host, and matched on replay on another port.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { record, replay } from '../../src';
import { Harness, Image, pushImage, Registry } from '../harness';
import { FakeUpstream, json } from '../support/fake-upstream';
import { get } from '../support/reliability';

jest.setTimeout(180_000);

const fixtureText = (dir: string): string =>
  fs.readdirSync(dir).filter((f) => f.endsWith('.md')).map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('\n');

describe('a cross-repo mount with origin= (go-containerregistry) records and replays on any port', () => {
  const h = new Harness();
  let reg: Registry;
  let image: Image;
  let fixtures: string;
  let recPort = 0;

  beforeAll(async () => {
    reg = await h.startRegistry({ mode: 'plain' });
    image = await h.makeImage({ layers: 1, layerSize: 32 * 1024 });
    await pushImage(image, `${reg.host}/test/src:v1`);
    fixtures = h.tempDir('fixtures');
  });
  afterAll(() => h.cleanup());

  const mount = (base: string, host: string): Promise<ReturnType<typeof get> extends Promise<infer T> ? T : never> =>
    get(`${base}/v2/test/dst/blobs/uploads/?mount=${image.layerDigests[0]}&from=test%2Fsrc&origin=${encodeURIComponent(host)}`, { method: 'POST' });

  it('record: the mount works, the fixture says origin=regtape.invalid, the registry got its own host', async () => {
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: () => undefined });
    recPort = rec.port;
    try {
      const r = await mount(rec.url, `127.0.0.1:${rec.port}`);
      expect(r.status).toBe(201);
      expect(r.headers['docker-content-digest']).toBe(image.layerDigests[0]);
    } finally {
      await rec.close();
    }
    const text = fixtureText(fixtures);
    expect(text).toContain('origin=regtape.invalid');
    expect(text).not.toContain(`127.0.0.1:${recPort}`);
    expect(text).not.toContain(`127.0.0.1%3A${recPort}`);
    // docker-registry logs each request's URI: it saw its own host, never the recorder's.
    expect(reg.logs()).toMatch(new RegExp(`origin=127\\.0\\.0\\.1(%3A|:)${reg.port}`));
    expect(reg.logs()).not.toMatch(new RegExp(`origin=127\\.0\\.0\\.1(%3A|:)${recPort}\\b`));
  });

  it('replay on another port matches the same mount by the placeholder (registry stopped)', async () => {
    await reg.stop();
    const server = await replay({ fixtures, port: 0 });
    try {
      expect(server.port).not.toBe(recPort);
      const r = await mount(server.url, `127.0.0.1:${server.port}`);
      expect(r.status).toBe(201);
      expect(r.headers['docker-content-digest']).toBe(image.layerDigests[0]);
      expect(server.unmatched()).toEqual([]);
      // localhost is the same server to the client: its origin is replaced as well.
      const viaName = await get(`http://localhost:${server.port}/v2/test/dst/blobs/uploads/?mount=${image.layerDigests[0]}&from=test%2Fsrc&origin=localhost%3A${server.port}`, { method: 'POST' });
      expect(viaName.status).toBe(201);
    } finally {
      await server.close();
    }
  });
});

describe('Origin and Referer naming the proxy', () => {
  it('are sent upstream as the upstream origin and written as the placeholder', async () => {
    const up = await FakeUpstream.start();
    const seen: Array<{ url: string; origin?: string; referer?: string }> = [];
    up.on('GET', `/v2/x/tags/list?origin=127.0.0.1%3A${up.port}`, (req, res) => {
      seen.push({ url: req.url ?? '', origin: req.headers.origin, referer: req.headers.referer });
      json(res, 200, '{"name":"x","tags":["a"]}');
    });
    const h = new Harness();
    const dir = h.tempDir('hdr');
    const rec = await record({ upstream: up.url, out: dir, port: 0, log: () => undefined });
    try {
      const r = await get(`${rec.url}/v2/x/tags/list?origin=127.0.0.1%3A${rec.port}`, { headers: { origin: rec.url, referer: `${rec.url}/v2/x/tags/list` } });
      expect(r.status).toBe(200);
      expect(seen).toEqual([{ url: `/v2/x/tags/list?origin=127.0.0.1%3A${up.port}`, origin: up.url, referer: `${up.url}/v2/x/tags/list` }]);
      await rec.close();
      const text = fixtureText(dir);
      expect(text).not.toContain(`:${rec.port}`);
      expect(text).toContain("origin: 'http://regtape.invalid'");
      expect(text).toContain('origin=regtape.invalid');
    } finally {
      await rec.close();
      await up.close();
      await h.cleanup();
    }
  });
});
