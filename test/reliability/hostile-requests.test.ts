// Hostile requests against running servers (`regtape replay` and `regtape record` as real processes,
// so that a crash shows as a dead process, not as a broken test runner): traversal in URLs, encoded
// NULs and malformed escapes, huge paths, header floods, 50 MB bodies. Each gets a 4xx (or 431), the
// server keeps answering /v2/, and its memory stays bounded.
import * as http from 'node:http';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CliProcess } from '../support/cli';
import { FakeUpstream } from '../support/fake-upstream';
import { get, memoryOf, raw, statusOf } from '../support/reliability';

jest.setTimeout(60_000);

const EXAMPLE = path.join(__dirname, '../../examples/hello-pull');
const LAYER = '2ba781bc3d1c065b041f38dcaff10d51a647c94adf84819b732be53789d59ba8';
const MB = 1024 * 1024;

/** A `regtape` server process that is started again if a request killed it (the kill is recorded). */
class Server {
  cli!: CliProcess;
  url = '';
  port = 0;
  readonly deaths: string[] = [];
  private lastRequest = '';
  constructor(private readonly args: () => string[]) {}

  async start(): Promise<void> {
    this.cli = new CliProcess(this.args());
    const line = await this.cli.firstLine();
    this.url = /on (http:\/\/\S+)/.exec(line)![1];
    this.port = Number(new URL(this.url).port);
  }
  alive(): boolean {
    return this.cli.child.exitCode === null && this.cli.child.signalCode === null;
  }
  /** Notes what is about to be sent, so that a death can be blamed on it. */
  sending(what: string): void {
    this.lastRequest = what;
  }
  /** After a request: is the server still there? If not, the death is blamed on what was sent last. */
  async check(): Promise<boolean> {
    const r = await get(`${this.url}/v2/`, { timeoutMs: 5000 });
    if (!r.error && this.alive()) return true;
    const exited = await Promise.race([this.cli.exited.then(() => true), new Promise<boolean>((res) => setTimeout(() => res(false), 5000))]);
    const why = this.cli.stderr.trim().split('\n').filter((l) => /Error/.test(l)).slice(-1)[0] ?? r.error;
    this.deaths.push(`${this.lastRequest} -> ${exited ? `exited ${this.cli.child.exitCode ?? this.cli.child.signalCode}` : 'no answer'}: ${why}`);
    return false;
  }
  /** Starts the server again if a request killed it. */
  async ensure(): Promise<void> {
    if (this.alive()) return;
    await this.cli.stop('SIGKILL');
    await this.start();
  }
  async stop(): Promise<void> {
    await this.cli?.stop('SIGKILL');
  }
}

const hostileUrls: Array<[string, string]> = [
  ['dot-dot segments', '/v2/../../../../etc/passwd'],
  ['dot-dot into the body store', `/v2/demo/hello/../../bodies/sha256/${LAYER}`],
  ['%2e%2e segments', '/v2/%2e%2e/%2e%2e/%2e%2e/etc/passwd'],
  ['encoded traversal in a digest', '/v2/demo/hello/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd'],
  ['encoded traversal in a manifest reference', `/v2/demo/hello/manifests/%2e%2e%2f%2e%2e%2fbodies%2fsha256%2f${LAYER}`],
  ['an encoded NUL in a tag', '/v2/demo/hello/manifests/v1%00'],
  ['an encoded NUL after a digest', `/v2/demo/hello/blobs/sha256:${LAYER}%00`],
  ['a malformed escape in a manifest reference', '/v2/demo/hello/manifests/%ZZ'],
  ['a truncated UTF-8 escape in a manifest reference', '/v2/demo/hello/manifests/%E0%A4%A'],
  ['a malformed escape in the query', '/v2/demo/hello/tags/list?n=%ZZ&last=%'],
  ['traversal through the token route', '/__regtape/token/https/..%2f..%2fetc/passwd'],
  ['traversal through the redirect route', '/__regtape/redirect/https/../../../etc/passwd'],
  ['a 10k-character path', '/v2/' + 'a/'.repeat(5000) + 'manifests/v1'],
  ['a 10k-character tag', '/v2/demo/hello/manifests/' + 'x'.repeat(10_000)],
  ['a 20k-character path (over the header limit)', '/v2/' + 'b'.repeat(20_000)],
  ['a double slash', '//etc/passwd'],
  ['an asterisk', '*'],
];

describe('`regtape replay` under hostile requests', () => {
  const server = new Server(() => ['replay', EXAMPLE, '--port', '0', '--quiet']);
  let pingStatus = 0;
  beforeAll(async () => {
    await server.start();
    pingStatus = (await get(`${server.url}/v2/`)).status;
    expect(pingStatus).toBe(200);
  });
  beforeEach(() => server.ensure());
  afterAll(() => server.stop());

  const stillServes = async (): Promise<void> => {
    expect(await server.check()).toBe(true);
    expect((await get(`${server.url}/v2/`, { timeoutMs: 5000 })).status).toBe(pingStatus);
  };

  it.each(hostileUrls)('%s: a 4xx, no file content, and it keeps serving', async (what, url) => {
    for (const method of ['GET', 'HEAD']) {
      server.sending(`${method} ${url.slice(0, 80)} (${what})`);
      const r = await raw(server.port, `${method} ${url} HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nConnection: close\r\n\r\n`);
      expect(r.text).not.toContain('root:x:0:0');
      await stillServes();
      const status = statusOf(r.text);
      // a malformed escape in the query of a route that exists may be answered; never a 5xx or nothing
      expect(status).toBeGreaterThanOrEqual(url.includes('?') ? 200 : 400);
      expect(status).toBeLessThan(500);
    }
  });

  it('2000 headers: 431 (or another 4xx), and it keeps serving', async () => {
    const lines = Array.from({ length: 2000 }, (_, i) => `X-Flood-${i}: ${'v'.repeat(8)}\r\n`).join('');
    server.sending('2000 headers');
    const r = await raw(server.port, `GET /v2/nope/manifests/x HTTP/1.1\r\nHost: 127.0.0.1\r\n${lines}Connection: close\r\n\r\n`);
    expect(statusOf(r.text)).toBeGreaterThanOrEqual(400);
    expect(statusOf(r.text)).toBeLessThan(500);
    await stillServes();
  });

  it('2000 tiny headers under the size limit: an answer, and it keeps serving', async () => {
    server.sending('2000 tiny headers');
    const r = await raw(server.port, `GET /v2/nope/manifests/x HTTP/1.1\r\nHost: 127.0.0.1\r\n${'a:b\r\n'.repeat(2000)}Connection: close\r\n\r\n`);
    expect(statusOf(r.text)).toBeGreaterThanOrEqual(400);
    expect(statusOf(r.text)).toBeLessThan(500);
    await stillServes();
  });

  it('one 100 KB header: 431, and it keeps serving', async () => {
    server.sending('one 100 KB header');
    const r = await raw(server.port, `GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'x'.repeat(100 * 1024)}\r\nConnection: close\r\n\r\n`);
    expect(statusOf(r.text)).toBe(431);
    await stillServes();
  });

  /** Streams `size` bytes as the request body (never held in memory); resolves with the answer. */
  const sendBody = (method: string, url: string, size: number, headers: Record<string, string> = {}): Promise<{ status: number; body: string; error?: string }> =>
    new Promise((resolve) => {
      const chunk = Buffer.alloc(MB, 'a');
      let answered: { status: number; body: string } | undefined;
      const req = http.request(`${server.url}${url}`, { method, agent: false, headers: { 'content-length': String(size), ...headers } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          answered = { status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() };
          resolve(answered);
        });
        res.on('error', (e) => resolve({ status: res.statusCode ?? 0, body: '', error: e.message }));
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (!answered) resolve({ status: 0, body: '', error: e.code ?? e.message });
      });
      let sent = 0;
      const pump = (): void => {
        while (sent < size) {
          const n = Math.min(MB, size - sent);
          sent += n;
          if (!req.write(n === MB ? chunk : chunk.subarray(0, n))) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });

  const oversized: Array<[string, string, string, Record<string, string>]> = [
    ['a 50 MB token POST', 'POST', '/__regtape/token/https/auth.docker.io/token', { 'content-type': 'application/x-www-form-urlencoded' }],
    ['a 50 MB manifest PUT', 'PUT', '/v2/demo/hello/manifests/v1', { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }],
    ['a 50 MB upload PATCH', 'PATCH', '/v2/demo/hello/blobs/uploads/1234', { 'content-type': 'application/octet-stream' }],
  ];
  it.each(oversized)('%s: a 4xx, and memory stays bounded', async (what, method, url, headers) => {
    server.sending(what);
    const r = await sendBody(method, url, 50 * MB, headers);
    expect(r.error).toBeUndefined();
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    const mem = memoryOf(server.cli.child.pid!);
    expect(mem.peak).toBeLessThan(300 * MB); // VmHWM: the peak, not a sample
    await stillServes();
  });

  it('no request above killed the server', () => {
    expect(server.deaths).toEqual([]);
  });
});

describe('`regtape record` under hostile requests', () => {
  let up: FakeUpstream;
  let out: string;
  const server = new Server(() => ['record', '--upstream', up.url, '--port', '0', '--out', out]);
  beforeAll(async () => {
    up = await FakeUpstream.start();
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-hostile-rec-'));
    await server.start();
  });
  beforeEach(() => server.ensure());
  afterAll(async () => {
    await server.stop();
    await up?.close();
    fs.rmSync(out, { recursive: true, force: true });
  });

  it.each(hostileUrls.filter(([, u]) => !u.startsWith('/__regtape/') && u.length < 16_000))('%s: an answer, and it keeps recording', async (what, url) => {
    server.sending(`GET ${url.slice(0, 80)} (${what})`);
    const r = await raw(server.port, `GET ${url} HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nConnection: close\r\n\r\n`);
    expect(await server.check()).toBe(true);
    expect((await get(`${server.url}/v2/`, { timeoutMs: 5000 })).status).toBe(200);
    const status = statusOf(r.text); // the upstream's 404, or the recorder's own 4xx
    expect(status).toBeGreaterThanOrEqual(400);
    expect(status).toBeLessThan(500);
  });

  it('no request above killed the recorder', () => {
    expect(server.deaths).toEqual([]);
  });
});
