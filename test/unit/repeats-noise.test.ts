// Repeated answers stored once with a count (format, writer, matcher), and per-run noise normalised
// when writing.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readMarkdown, writeMarkdown } from '../../src/fixture/markdown';
import { readYaml, writeYaml } from '../../src/fixture/yaml';
import { Exchange, FixtureError, HeaderList, ORIGIN_PLACEHOLDER } from '../../src/fixture/model';
import { loadFixtures } from '../../src/fixture/files';
import { Matcher } from '../../src/replay/match';
import { FixtureWriter, CapturedExchange } from '../../src/record/writer';
import { Redactor } from '../../src/record/redact';
import { normaliseNoise } from '../../src/record/noise';

const answer = (text: string, status = 200): Exchange['response'] => ({ status, headers: [['content-type', 'application/json']], body: { kind: 'inline', text } });
const ping = (text: string, times?: number): Exchange => ({ request: { method: 'GET', url: '/v2/', headers: [], body: { kind: 'none' } }, response: answer(text, 401), ...(times ? { times } : {}) });

describe('the count of a repeated answer in the formats', () => {
  it('markdown writes `## out xN` and reads it back; `## out` is once', () => {
    const text = writeMarkdown([ping('{"a":1}', 3)]);
    expect(text).toContain('\n## out x3\n');
    expect(readMarkdown(text, 'f.md')[0].times).toBe(3);
    const once = writeMarkdown([ping('{"a":1}')]);
    expect(once).toContain('\n## out\n');
    expect(readMarkdown(once, 'f.md')[0].times).toBeUndefined();
  });

  it('markdown refuses a count that is not a whole number >= 1, naming the line', () => {
    const text = writeMarkdown([ping('{"a":1}', 3)]);
    const line = text.split('\n').indexOf('## out x3') + 1;
    for (const bad of ['## out x0', '## out x', '## out 3', '## out x2 times']) {
      expect(() => readMarkdown(text.replace('## out x3', bad), 'f.md')).toThrow(new FixtureError('f.md', line, `expected '## out' or '## out xN' (the answer given N times in a row, N >= 1), not ${JSON.stringify(bad)}`));
    }
  });

  it('YAML writes out.times and reads it back; a bad count names the exchange line', () => {
    const text = writeYaml([ping('{"a":1}', 2)]);
    expect(text).toMatch(/\n {6}times: 2\n/);
    expect(readYaml(text, 'f.yaml')[0].times).toBe(2);
    expect(readYaml(writeYaml([ping('x')]), 'f.yaml')[0].times).toBeUndefined();
    expect(() => readYaml(text.replace('times: 2', 'times: two'), 'f.yaml')).toThrow(/^f\.yaml:2: exchange 1: 'out.times' must be a whole number >= 1/);
  });
});

describe('the matcher expands a count into the sequence', () => {
  it('[A x2, B] answers A, A, B, then B again', () => {
    const store = undefined as never;
    const a = { ...ping('A', 2), source: { file: 'p.md', line: 1 }, store };
    const b = { ...ping('B'), source: { file: 'p.2.md', line: 1 }, store };
    const m = new Matcher([a, b]);
    const served = [1, 2, 3, 4].map(() => (m.match({ method: 'GET', url: '/v2/', headers: [] })?.response?.body as { text: string }).text);
    expect(served).toEqual(['A', 'A', 'B', 'B']);
    expect(m.size).toBe(2);
  });
});

describe('FixtureWriter: identical consecutive answers are one file with a count', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-unit-repeats-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const captured = (body: string, ua = 'skopeo/1.9.3'): CapturedExchange => ({
    method: 'GET',
    url: '/v2/',
    reqHeaders: [['user-agent', ua]],
    reqBody: { kind: 'none' },
    status: 401,
    resHeaders: [['content-type', 'application/json'], ['date', new Date().toUTCString()]],
    resBody: { kind: 'inline', text: body },
    liveOrigin: 'http://127.0.0.1:8000',
    secret: false,
    from: 'http://127.0.0.1:5000',
  });

  it('[A, A, B, A] is written as `A x2`, `B`, `A` (lossless), and replays in that order', async () => {
    const w = await FixtureWriter.open({ out: dir, format: 'md', redactor: new Redactor(), log: () => undefined });
    const results = await Promise.all([w.write(captured('A')), w.write(captured('A', 'docker/20.10')), w.write(captured('B')), w.write(captured('A'))]);
    expect(results.map((r) => r.times)).toEqual([1, 2, 1, 1]);
    const names = fs.readdirSync(dir).sort();
    expect(names).toEqual(['GET_v2.7e186c08.2.md', 'GET_v2.7e186c08.3.md', 'GET_v2.7e186c08.md']);
    const first = fs.readFileSync(path.join(dir, 'GET_v2.7e186c08.md'), 'utf8');
    expect(first).toContain('## out x2');
    expect(first).toContain("'user-agent': 'skopeo/1.9.3'"); // the request shown is the first of the run
    expect(first).not.toMatch(/\bdate:/);
    const loaded = await loadFixtures([dir]);
    const m = new Matcher(loaded.exchanges);
    const served = [1, 2, 3, 4, 5].map(() => (m.match({ method: 'GET', url: '/v2/', headers: [] })?.response?.body as { text: string }).text);
    expect(served).toEqual(['A', 'A', 'B', 'A', 'A']);
  });

  it('keepNoise writes the Date as recorded', async () => {
    const w = await FixtureWriter.open({ out: dir, format: 'md', redactor: new Redactor(), keepNoise: true, log: () => undefined });
    await w.write(captured('A'));
    expect(fs.readFileSync(path.join(dir, 'GET_v2.7e186c08.md'), 'utf8')).toMatch(/\n {2}date: '\w{3}, \d\d \w{3} \d{4} /);
  });
});

describe('normaliseNoise', () => {
  const live = 'http://127.0.0.1:41000';
  const ex = (reqHeaders: HeaderList, resHeaders: HeaderList, body: string, url = '/v2/'): Exchange => ({
    request: { method: 'GET', url, headers: reqHeaders, body: { kind: 'none' } },
    response: { status: 200, headers: resHeaders, body: { kind: 'inline', text: body } },
  });

  it('drops Date, sorts Accept lines in place, hides the kernel version, points Referer at the placeholder', () => {
    const out = normaliseNoise(
      ex(
        [['Accept', 'b/2'], ['User-Agent', 'docker/20.10.24 go/go1.19.8 kernel/6.8.0-45-generic os/linux'], ['accept', 'a/1'], ['Referer', `${live}/v2/x/blobs/sha256:ab`]],
        [['Content-Type', 'application/json'], ['Date', 'Sat, 28 Nov 2026 09:21:48 GMT']],
        '{}',
      ),
      live,
      false,
    );
    expect(out.request.headers).toEqual([['Accept', 'a/1'], ['User-Agent', 'docker/20.10.24 go/go1.19.8 kernel/<normalised> os/linux'], ['accept', 'b/2'], ['Referer', `${ORIGIN_PLACEHOLDER}/v2/x/blobs/sha256:ab`]]);
    expect(out.response!.headers).toEqual([['Content-Type', 'application/json']]);
  });

  it('drops the ports of loopback token servers and CDNs in regtape URLs, never of other hosts', () => {
    const out = normaliseNoise(
      ex([], [['www-authenticate', `Bearer realm="${ORIGIN_PLACEHOLDER}/__regtape/token/http/127.0.0.1:34675/token",service="x"`], ['location', `${ORIGIN_PLACEHOLDER}/__regtape/redirect/https/cdn.example.com:8443/blob`]], '{}', '/__regtape/redirect/http/localhost:39689/docker/data?x=1'),
      live,
      false,
    );
    expect(out.request.url).toBe('/__regtape/redirect/http/localhost/docker/data?x=1');
    expect(out.response!.headers).toEqual([
      ['www-authenticate', `Bearer realm="${ORIGIN_PLACEHOLDER}/__regtape/token/http/127.0.0.1/token",service="x"`],
      ['location', `${ORIGIN_PLACEHOLDER}/__regtape/redirect/https/cdn.example.com:8443/blob`],
    ]);
  });

  it('replaces issued_at and expires_at of token responses only, keeping the bytes around them', () => {
    const token = '{"token":"<redacted>","expires_in":300,"issued_at":"2026-11-28T09:21:48.000Z","expires_at": "2026-11-28T09:26:48Z"}';
    const out = normaliseNoise(ex([], [], token), live, true);
    expect((out.response!.body as { text: string }).text).toBe('{"token":"<redacted>","expires_in":300,"issued_at":"<normalised>","expires_at": "<normalised>"}');
    expect((normaliseNoise(ex([], [], token), live, false).response!.body as { text: string }).text).toBe(token);
  });
});
