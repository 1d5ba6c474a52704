// Crash safety: `regtape record` (a real process) is SIGKILLed in the middle of a 150 MB layer.
// The folder must still load in replay, the half layer must never be served truncated, and what the
// crash left behind must be ignored by replay and removed by the next `record` start.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { replay } from '../../src';
import { CliProcess } from '../support/cli';
import { FakeUpstream, GeneratedBlob } from '../support/fake-upstream';
import { allFiles, fixtureFiles, get, sha256, tempLeftovers, waitFor } from '../support/reliability';

jest.setTimeout(90_000);

const MB = 1024 * 1024;

describe('record is SIGKILLed mid-blob', () => {
  let up: FakeUpstream;
  let out: string;
  let rec: CliProcess | undefined;
  let rec2: CliProcess | undefined;
  const layer = new GeneratedBlob(150 * MB);
  const small = new GeneratedBlob(200 * 1024);
  let layerUrl: string;
  let smallUrl: string;
  /** a temp fixture file as writeFileAtomic names them, as if the crash had hit during its write */
  let plantedTemp: string;
  let partialTmpSize = 0;
  let clientReceived = 0;

  beforeAll(async () => {
    up = await FakeUpstream.start();
    layerUrl = up.blob('crash/img', layer);
    smallUrl = up.blob('crash/img', small);
    out = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-crash-'));

    rec = new CliProcess(['record', '--upstream', up.url, '--port', '0', '--out', out]);
    const line = await rec.firstLine();
    const url = /recording on (http:\/\/\S+)/.exec(line)![1];

    // complete exchanges first: they must survive the crash
    expect((await get(`${url}/v2/`)).status).toBe(200);
    const s = await get(`${url}${smallUrl}`);
    expect(sha256(s.body)).toBe(small.digest);
    await waitFor(() => fixtureFiles(out).length === 2, 'the two complete fixtures on disk');

    // a client that reads ~20 MB of the 150 MB layer, then stops reading (the recorder stays mid-blob)
    const client = http.get(`${url}${layerUrl}`, { agent: false }, (res) => {
      res.on('data', (c: Buffer) => {
        clientReceived += c.length;
        if (clientReceived >= 20 * MB) res.pause();
      });
      res.on('error', () => undefined);
    });
    client.on('error', () => undefined);
    const tmpDir = path.join(out, 'bodies', '.tmp');
    await waitFor(() => {
      // each recorder process keeps its temp bodies in bodies/.tmp/<pid>/
      const sizes = fs.existsSync(tmpDir) ? allFiles(tmpDir).map((f) => fs.statSync(path.join(tmpDir, f)).size) : [];
      partialTmpSize = Math.max(0, ...sizes);
      return clientReceived >= 20 * MB && partialTmpSize >= 10 * MB;
    }, 'the recorder to be well into the layer (>= 10 MB in bodies/.tmp)', 30_000);

    await rec.stop('SIGKILL');
    client.destroy();

    plantedTemp = path.join(out, `.GET_v2.7e186c08.2.md.${rec.child.pid}-0badf00d.tmp`);
    fs.writeFileSync(plantedTemp, '# GET /v2/ -> 200\n## in\n```\nurl /v2/\nmeth'); // cut mid-write: unreadable
  });

  afterAll(async () => {
    await rec?.stop('SIGKILL');
    await rec2?.stop('SIGKILL');
    await up?.close();
    if (out) fs.rmSync(out, { recursive: true, force: true });
  });

  it('the kill really happened mid-blob: a partial body is in bodies/.tmp, none under its digest', () => {
    expect(partialTmpSize).toBeGreaterThanOrEqual(10 * MB);
    expect(partialTmpSize).toBeLessThan(layer.size);
    expect(allFiles(out).filter((f) => f.includes(layer.hex.slice(0, 12)))).toEqual([]);
    expect(allFiles(out)).not.toContain(path.join('bodies', 'sha256', layer.hex));
  });

  it('the folder loads in replay; complete exchanges are served; the half layer is not (or only whole)', async () => {
    const server = await replay({ fixtures: out, port: 0 });
    try {
      expect(server.exchanges).toBe(2);
      expect((await get(`${server.url}/v2/`)).status).toBe(200);
      const s = await get(`${server.url}${smallUrl}`);
      expect(sha256(s.body)).toBe(small.digest);
      const r = await get(`${server.url}${layerUrl}`);
      if (r.status === 200) {
        // served after all? then whole and right, never truncated
        expect(r.complete).toBe(true);
        expect(r.body.length).toBe(layer.size);
        expect(sha256(r.body)).toBe(layer.digest);
      } else {
        expect(r.status).toBe(404);
        expect(JSON.parse(r.body.toString()).errors[0].code).toBe('BLOB_UNKNOWN');
      }
    } finally {
      await server.close();
    }
  });

  it('the next `record` start removes bodies/.tmp leftovers', async () => {
    expect(fs.readdirSync(path.join(out, 'bodies', '.tmp')).length).toBeGreaterThan(0);
    rec2 = new CliProcess(['record', '--upstream', up.url, '--port', '0', '--out', out]);
    await rec2.firstLine();
    const tmp = path.join(out, 'bodies', '.tmp');
    expect(fs.existsSync(tmp) ? allFiles(tmp) : []).toEqual([]);
  });

  it('the next `record` start removes temp fixture files a crashed write left (dot-prefixed *.tmp)', async () => {
    if (!rec2) throw new Error('the previous test did not start the second recorder');
    expect(fs.existsSync(plantedTemp)).toBe(false);
    expect(tempLeftovers(out)).toEqual([]);
  });

  it('the restarted recorder records into the same folder, appending to sequences; all of it replays', async () => {
    const line = rec2!.stdout.split('\n')[0];
    const url = /recording on (http:\/\/\S+)/.exec(line)![1];
    expect((await get(`${url}/v2/`)).status).toBe(200);
    await waitFor(() => fixtureFiles(out).includes('GET_v2.7e186c08.2.md'), 'the second ping fixture (GET_v2.7e186c08.2.md)');
    expect(await rec2!.stop('SIGTERM')).toBe(0);
    const server = await replay({ fixtures: out, port: 0 });
    try {
      expect(server.exchanges).toBe(3);
    } finally {
      await server.close();
    }
  });
});

describe('a second recorder started on the same folder while the first is mid-blob', () => {
  it("refuses to start and touches nothing: the first one's layer is still recorded", async () => {
    const up = await FakeUpstream.start();
    const layer = new GeneratedBlob(16 * MB);
    const layerUrl = up.blob('shared/img', layer);
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-shared-'));
    const { record } = await import('../../src');
    const a = await record({ upstream: up.url, out, port: 0 });
    let b: Awaited<ReturnType<typeof record>> | undefined;
    try {
      let received = 0;
      const chunks: Buffer[] = [];
      let paused: http.IncomingMessage | undefined;
      const done = new Promise<void>((resolve, reject) => {
        const req = http.get(`${a.url}${layerUrl}`, { agent: false }, (res) => {
          res.on('data', (c: Buffer) => {
            chunks.push(c);
            received += c.length;
            if (received >= 2 * MB && !paused) {
              paused = res;
              res.pause();
            }
          });
          res.on('end', () => resolve());
          res.on('error', reject);
        });
        req.on('error', reject);
      });
      const tmpDir = path.join(out, 'bodies', '.tmp');
      await waitFor(() => paused !== undefined && fs.existsSync(tmpDir) && allFiles(tmpDir).length > 0, 'the first recorder to be mid-blob');
      // The folder is locked: the second recorder refuses before it cleans anything.
      await expect(record({ upstream: up.url, out, port: 0 }).then((r) => (b = r))).rejects.toThrow(/in use by another regtape recorder \(pid \d+/);
      paused!.resume();
      await done;
      expect(sha256(Buffer.concat(chunks))).toBe(layer.digest);
      await a.close();
      expect(fixtureFiles(out).filter((f) => f.startsWith('GET_shared_img_blobs_'))).toHaveLength(1);
      expect(allFiles(out)).toContain(path.join('bodies', 'sha256', layer.hex));
    } finally {
      await a.close();
      await b?.close();
      await up.close();
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
