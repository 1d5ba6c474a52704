// The control API (/__regtape/) as a test suite in another language sees it: health, the summary after a
// real skopeo pull, bounded recent requests, and reset giving a fresh run (sequences from the start, push
// state forgotten) without a restart. The library's summary()/report()/requests()/reset() agree with it.
import * as path from 'node:path';
import { record, replay, ReplayServer } from '../../src';
import { checkDirImage, Harness, pushImage } from '../harness';
import { request } from '../support/http';

jest.setTimeout(120_000);
const EXAMPLE = path.join(__dirname, '../../examples/hello-pull');
const DIGEST = 'sha256:ffd83494680ab9ca524f1fc6209df7007e3a0be1c52ce9580f0eaf4d0583d725';
const quiet = (): void => undefined;

async function getJson(url: string, method = 'GET'): Promise<{ status: number; json: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any -- JSON from the wire, checked field by field
  const r = await request(url, { method });
  expect(r.headers['content-type']).toMatch(/^application\/json/);
  return { status: r.status, json: JSON.parse(r.body.toString()) };
}

describe('control API on the bundled example', () => {
  const h = new Harness();
  let r: ReplayServer;
  beforeAll(async () => {
    r = await replay({ fixtures: EXAMPLE, port: 0, log: quiet });
    h.onCleanup(() => r.close());
  });
  afterAll(() => h.cleanup());

  it('health is 200 while serving', async () => {
    expect(await getJson(`${r.url}/__regtape/health`)).toEqual({ status: 200, json: { status: 'serving', exchanges: 12 } });
  });

  it('a skopeo pull, then the summary counts it; reset; the same pull answers from the start of each sequence', async () => {
    const answers = async (): Promise<string[]> => (await getJson(`${r.url}/__regtape/requests`)).json.requests.map((q: { method: string; url: string; answer: string }) => `${q.method} ${q.url} <- ${path.basename(q.answer)}`);
    expect(checkDirImage((await h.pullToDir(`127.0.0.1:${r.port}/demo/hello:v1`)).dir).manifestDigest).toBe(DIGEST);
    const s1 = (await getJson(`${r.url}/__regtape/summary`)).json;
    const first = await answers();
    expect(first.length).toBeGreaterThanOrEqual(4); // /v2/, manifest, config, layer
    expect(s1.served).toBe(first.length);
    expect(s1.unmatched).toEqual([]);
    expect(s1.unmatchedTotal).toBe(0);
    expect(s1.unused.length).toBe(12 - first.length); // each request used a different fixture
    for (const u of s1.unused) expect(u).toEqual({ request: expect.stringMatching(/^GET \/v2\//), source: expect.stringMatching(/\.md:\d+$/) });
    expect(s1.recorded).toEqual([]);
    expect(r.report()).toEqual(s1); // the library says the same

    // Without a reset the recorded sequences move on: the second pull is answered by later recordings.
    await h.pullToDir(`127.0.0.1:${r.port}/demo/hello:v1`);
    const second = (await answers()).slice(first.length);
    expect(second).not.toEqual(first);

    expect(await getJson(`${r.url}/__regtape/reset`, 'POST')).toEqual({ status: 200, json: { status: 'reset' } });
    const s0 = (await getJson(`${r.url}/__regtape/summary`)).json;
    expect(s0).toEqual({ served: 0, unmatched: [], unmatchedTotal: 0, unused: expect.any(Array), recorded: [] });
    expect(s0.unused.length).toBe(12);
    expect(await answers()).toEqual([]);
    expect(checkDirImage((await h.pullToDir(`127.0.0.1:${r.port}/demo/hello:v1`)).dir).manifestDigest).toBe(DIGEST);
    expect(await answers()).toEqual(first);
  });

  it('unmatched requests are listed once each with a count, the nearest recording and what differs', async () => {
    await request(`${r.url}/__regtape/reset`, { method: 'POST' });
    for (let i = 0; i < 3; i++) await request(`${r.url}/v2/demo/hello/manifests/v2`);
    await request(`${r.url}/v2/demo/other/tags/list`);
    const s = (await getJson(`${r.url}/__regtape/summary`)).json;
    expect(s.served).toBe(0);
    expect(s.unmatchedTotal).toBe(4);
    expect(s.unmatched.map((m: { request: string; count: number }) => [m.request, m.count])).toEqual([
      ['GET /v2/demo/hello/manifests/v2', 3],
      ['GET /v2/demo/other/tags/list', 1],
    ]);
    const nearest = s.unmatched[0].nearest[0];
    expect(nearest).toEqual({ request: 'GET /v2/demo/hello/manifests/v1', source: expect.stringMatching(/GET_demo_hello_manifests_v1\.[0-9a-f]{8}(\.\d)?\.md:\d+$/), why: expect.any(String) });
    expect(nearest.why).toMatch(/v1|v2|path|url/);
    expect(r.summary().unmatched.map((m) => m.count)).toEqual([3, 1]);
    // control requests themselves are never registry traffic
    const list = (await getJson(`${r.url}/__regtape/requests`)).json;
    expect(list.requests.map((q: { outcome: string }) => q.outcome)).toEqual(['unmatched', 'unmatched', 'unmatched', 'unmatched']);
    expect(list.requests[0]).toEqual({ time: expect.any(String), method: 'GET', url: '/v2/demo/hello/manifests/v2', status: 404, bytes: expect.any(Number), ms: expect.any(Number), answer: expect.stringContaining('no fixture for GET /v2/demo/hello/manifests/v2'), outcome: 'unmatched' });
  });

  it('requests are bounded: the newest 500 are kept, ?limit=N gives the newest N', async () => {
    await request(`${r.url}/__regtape/reset`, { method: 'POST' });
    for (let i = 0; i < 510; i++) await request(`${r.url}/v2/demo/hello/manifests/n${i}`, { method: 'HEAD' });
    const all = (await getJson(`${r.url}/__regtape/requests`)).json;
    expect(all.max).toBe(500);
    expect(all.requests.length).toBe(500);
    expect(all.requests[0].url).toBe('/v2/demo/hello/manifests/n10');
    expect(all.requests[499].url).toBe('/v2/demo/hello/manifests/n509');
    const two = (await getJson(`${r.url}/__regtape/requests?limit=2`)).json;
    expect(two.requests.map((q: { url: string }) => q.url)).toEqual(['/v2/demo/hello/manifests/n508', '/v2/demo/hello/manifests/n509']);
    expect(r.requests().length).toBe(500);
    expect((await getJson(`${r.url}/__regtape/requests?limit=x`)).status).toBe(400);
  });

  it('wrong method or path: a JSON error naming the endpoints', async () => {
    const wrong = await getJson(`${r.url}/__regtape/reset`);
    expect(wrong.status).toBe(405);
    expect(wrong.json.error).toContain('POST /__regtape/reset');
    const none = await getJson(`${r.url}/__regtape/nope`);
    expect(none.status).toBe(404);
    expect(none.json.error).toContain('GET /__regtape/summary');
  });
});

describe('reset forgets push state: a recorded push replays twice', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('skopeo pushes the same image twice across a reset; both follow the recording, nothing unmatched', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 2, layerSize: 32 * 1024 });
    const fixtures = h.tempDir('push');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    await pushImage(image, `127.0.0.1:${rec.port}/pushed/img:v1`);
    await rec.close();
    await reg.stop();

    const r = await replay({ fixtures, port: 0, log: quiet, strict: true });
    h.onCleanup(() => r.close().catch(() => undefined));
    const uploads = (): number => r.requests().filter((q) => q.method === 'POST' && q.url.includes('/blobs/uploads/')).length;
    await pushImage(image, `127.0.0.1:${r.port}/pushed/img:v1`);
    const firstRun = r.requests().map((q) => `${q.method} ${q.url.replace(/uploads\/[^?]+/, 'uploads/ID')} ${q.status}`);
    expect(uploads()).toBe(3); // two layers and the config
    expect(r.summary().unmatched).toEqual([]);

    // Without a reset, this run's uploads exist: the same push finds its blobs and uploads nothing.
    await pushImage(image, `127.0.0.1:${r.port}/pushed/img:v1`);
    expect(uploads()).toBe(3);

    r.reset();
    await pushImage(image, `127.0.0.1:${r.port}/pushed/img:v1`);
    expect(r.requests().map((q) => `${q.method} ${q.url.replace(/uploads\/[^?]+/, 'uploads/ID')} ${q.status}`)).toEqual(firstRun);
    expect(uploads()).toBe(3);
    await r.close(); // strict: rejects if anything went unmatched
  });
});

describe('record answers health itself', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('GET /__regtape/health is 200 from the recorder, not forwarded and not recorded', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const out = h.tempDir('rec');
    const rec = await record({ upstream: reg.url, out, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    expect(await getJson(`${rec.url}/__regtape/health`)).toEqual({ status: 200, json: { status: 'recording', upstream: reg.url } });
    await rec.close();
    expect(rec.written()).toEqual([]);
  });
});
