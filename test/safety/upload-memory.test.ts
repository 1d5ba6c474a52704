// Item: request bodies through the recorder honour backpressure. A large chunked PATCH upload goes
// through `regtape record` (a real process) to a real docker-registry; the recorder's peak RSS
// (VmHWM from /proc) must stay bounded, the registry must get every byte, and the fixture must
// reference the body by its digest.
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { Harness, Registry } from '../harness';
import { CliProcess } from '../support/cli';
import { get, memoryOf } from '../support/reliability';

jest.setTimeout(300_000);
const MB = 1024 * 1024;
/** 512 MiB keeps the test quick and still shows the bound; REGTAPE_UPLOAD_MIB=1024 for the 1 GiB measurement. */
const SIZE = Number(process.env.REGTAPE_UPLOAD_MIB ?? 512) * MB;

/** Streams `size` bytes (a 1 MiB random block, each MiB stamped) as a chunked PATCH, with the client's own backpressure. */
function chunkedPatch(url: string, size: number): Promise<{ status: number; headers: http.IncomingHttpHeaders; digest: string }> {
  const block = randomBytes(MB);
  const hash = createHash('sha256');
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'PATCH', headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, digest: 'sha256:' + hash.digest('hex') }));
    });
    req.on('error', reject);
    let sent = 0;
    let i = 0;
    const pump = (): void => {
      while (sent < size) {
        const c = Buffer.from(block.subarray(0, Math.min(MB, size - sent)));
        c.writeUInt32BE(i++, 0);
        sent += c.length;
        hash.update(c);
        if (!req.write(c)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

describe('recorder: a 512 MiB chunked upload', () => {
  const h = new Harness();
  let reg: Registry;
  let rec: CliProcess;
  let url = '';
  let out = '';
  beforeAll(async () => {
    reg = await h.startRegistry({ mode: 'plain' });
    out = h.tempDir('fixtures');
    rec = new CliProcess(['record', '--upstream', reg.url, '--port', '0', '--out', out]);
    h.onCleanup(() => rec.stop().then(() => undefined));
    url = /on (http:\/\/\S+)/.exec(await rec.firstLine())![1];
  });
  afterAll(() => h.cleanup());

  it('streams with backpressure: recorder peak RSS stays under 200 MB, every byte arrives', async () => {
    const start = await get(`${url}/v2/test/big/blobs/uploads/`, { method: 'POST' });
    expect(start.status).toBe(202);
    const location = String(start.headers.location);
    const before = memoryOf(rec.child.pid!).peak;
    const patch = await chunkedPatch(new URL(location, url).href, SIZE);
    expect(patch.status).toBe(202);
    const peak = memoryOf(rec.child.pid!).peak;
    process.stderr.write(`recorder VmHWM before ${(before / MB).toFixed(0)} MB, after a ${SIZE / MB} MiB upload ${(peak / MB).toFixed(0)} MB\n`);
    expect(peak).toBeLessThan(200 * MB);
    // Bounded, not proportional: without backpressure 256 MiB added 84 MB (1 GiB: 902 MB); with it, 512 MiB
    // added about 40 MB on Node 20 and 70 MB on Node 24 here.
    expect(peak - before).toBeLessThan(128 * MB);
    const put = new URL(String(patch.headers.location), url);
    put.searchParams.set('digest', patch.digest);
    const done = await get(put.href, { method: 'PUT' });
    expect(done.status).toBe(201);
    const head = await get(`${url}/v2/test/big/blobs/${patch.digest}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(Number(head.headers['content-length'])).toBe(SIZE);
    // Fixtures are written once an exchange completed: stopping the recorder waits for every one in flight.
    expect(await rec.stop('SIGTERM')).toBe(0);
    // The registry holds the very bytes; the fixture stores the request body under its digest.
    const stored = path.join(out, 'bodies', 'sha256', patch.digest.slice(7));
    expect(fs.statSync(stored).size).toBe(SIZE);
    const fixtures = fs.readdirSync(out).filter((f) => f.startsWith('PATCH_'));
    expect(fixtures).toHaveLength(1);
    expect(fs.readFileSync(path.join(out, fixtures[0]), 'utf8')).toContain(patch.digest);
  });
});
