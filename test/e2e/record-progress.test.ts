// Long recordings: progress of a large layer (stderr not a TTY: a line every few seconds), the summary
// at the end, and Ctrl-C: the first finishes what is in flight and says how far it is, a second stops
// at once with nothing half-written, --drain-timeout bounds the wait. The client holds the transfer
// open by not reading (backpressure reaches the upstream), so every step waits on an event, not a sleep.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { freePort, Harness, Image, pushImage } from '../harness';
import { CliProcess } from '../support/cli';
import { Progress } from '../../src/record/progress';

jest.setTimeout(180_000);

const MIB = 1024 * 1024;

/** Waits until `cond` holds, polling; fails naming `what` (and the recorder's stderr) after 60 s. */
async function until(cond: () => boolean, what: string, cli: CliProcess): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; stderr:\n${cli.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A blob download that reads its first chunk and then stops reading until `resume()`. */
function heldDownload(url: string): { resume: () => Promise<Buffer>; closed: Promise<void>; abort: () => void } {
  const chunks: Buffer[] = [];
  let res: http.IncomingMessage | undefined;
  let done!: (b: Buffer) => void;
  const all = new Promise<Buffer>((r) => (done = r));
  let closed!: () => void;
  const closedP = new Promise<void>((r) => (closed = r));
  const req = http.get(url, (r) => {
    res = r;
    r.once('data', () => r.pause());
    r.on('data', (c: Buffer) => chunks.push(c));
    r.on('end', () => done(Buffer.concat(chunks)));
    r.on('close', () => closed());
    r.on('error', () => closed());
  });
  req.on('error', () => closed());
  return {
    resume: () => {
      res?.resume();
      return all;
    },
    closed: closedP,
    abort: () => req.destroy(),
  };
}

describe('record: progress and Ctrl-C on a large layer', () => {
  const h = new Harness();
  let image: Image;
  let upstream: string;
  let layer: string;
  let layerSize: number;
  const repo = 'big/layer';

  beforeAll(async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    upstream = reg.url;
    image = await h.makeImage({ layers: 1, layerSize: 40 * MIB, tag: 'v1' });
    await pushImage(image, `${reg.host}/${repo}:v1`);
    layer = image.layerDigests[0];
    layerSize = fs.statSync(path.join(image.dir, 'blobs', 'sha256', layer.slice(7))).size;
  });
  afterAll(() => h.cleanup());

  async function startRecorder(extra: string[] = []): Promise<{ cli: CliProcess; port: number; out: string }> {
    const out = h.tempDir('big');
    const port = await freePort();
    const cli = new CliProcess(['record', '--upstream', upstream, '--port', String(port), '--out', out, ...extra]);
    h.onCleanup(() => void cli.stop('SIGKILL'));
    await cli.firstLine();
    return { cli, port, out };
  }
  const blobLine = (): RegExp => new RegExp(`GET /v2/${repo}/blobs/${layer} \\d+\\.\\d MiB of ${(layerSize / MIB).toFixed(1)} MiB \\(\\d+%\\)`);

  it('a progress line while the layer streams; the first SIGINT says what is in flight and finishes it; the summary', async () => {
    const { cli, port, out } = await startRecorder();
    const dl = heldDownload(`http://127.0.0.1:${port}/v2/${repo}/blobs/${layer}`);
    await until(() => new RegExp(`^regtape: ${blobLine().source} at `, 'm').test(cli.stderr), 'a progress line for the held layer', cli);
    cli.child.kill('SIGINT');
    await until(() => /regtape: SIGINT, finishing 1 in-flight exchange\(s\): /.test(cli.stderr), 'the SIGINT line', cli);
    expect(cli.stderr).toMatch(new RegExp(`regtape: SIGINT, finishing 1 in-flight exchange\\(s\\): ${blobLine().source} \\(Ctrl-C again to stop at once\\)`));
    const body = await dl.resume();
    expect('sha256:' + createHash('sha256').update(body).digest('hex')).toBe(layer);
    expect(await cli.exited).toBe(0);
    expect(cli.stderr).toMatch(new RegExp(`regtape: recorded 1 exchange, ${(layerSize / MIB).toFixed(1)} MiB, 1 body stored, in \\d+\\.\\d s`));
    expect(fs.statSync(path.join(out, 'bodies', 'sha256', layer.slice(7))).size).toBe(layerSize);
    expect(fs.readdirSync(out).some((f) => f.startsWith(`GET_big_layer_blobs_sha256-${layer.slice(7, 19)}.`))).toBe(true);
  });

  it('a second SIGINT stops at once: no fixture, nothing under the digest, only temp files', async () => {
    const { cli, port, out } = await startRecorder();
    const dl = heldDownload(`http://127.0.0.1:${port}/v2/${repo}/blobs/${layer}`);
    await until(() => fs.existsSync(path.join(out, 'bodies', '.tmp')), 'the layer streaming into bodies/.tmp', cli);
    cli.child.kill('SIGINT');
    await until(() => /finishing 1 in-flight/.test(cli.stderr), 'the first SIGINT line', cli);
    cli.child.kill('SIGINT');
    expect(await cli.exited).toBe(130);
    expect(cli.stderr).toMatch(/regtape: SIGINT again: stopping now; 1 exchange\(s\) not recorded/);
    dl.abort();
    const files = fs.readdirSync(out);
    expect(files.filter((f) => !f.startsWith('.') && f !== 'bodies')).toEqual([]);
    expect(fs.existsSync(path.join(out, 'bodies', 'sha256', layer.slice(7)))).toBe(false);
  });

  it('--drain-timeout bounds the wait for an exchange that does not finish', async () => {
    const { cli, port, out } = await startRecorder(['--drain-timeout', '1']);
    const dl = heldDownload(`http://127.0.0.1:${port}/v2/${repo}/blobs/${layer}`);
    await until(() => fs.existsSync(path.join(out, 'bodies', '.tmp')), 'the layer streaming into bodies/.tmp', cli);
    cli.child.kill('SIGINT');
    expect(await cli.exited).toBe(1);
    expect(cli.stderr).toMatch(/giving up after 1 s\)/);
    expect(cli.stderr).toMatch(/regtape: --drain-timeout 1 s: stopping with 1 exchange\(s\) unfinished \(\d+\.\d MiB received\), not recorded/);
    dl.abort();
    expect(fs.existsSync(path.join(out, 'bodies', 'sha256', layer.slice(7)))).toBe(false);
  });
});

describe('Progress on a TTY: one live line with bytes, rate and percent', () => {
  it('redraws the line as bytes arrive and clears it when the transfer ends', () => {
    let now = 0;
    const live: string[] = [];
    const p = new Progress({ tty: true, live: (t) => live.push(t), now: () => now });
    const t = p.start('GET /v2/x/blobs/sha256:ab', 32 * MIB);
    now = 1000;
    t.add(8 * MIB);
    now = 2000;
    t.add(8 * MIB);
    expect(live).toEqual(['GET /v2/x/blobs/sha256:ab 8.0 MiB of 32.0 MiB (25%) at 8.0 MiB/s', 'GET /v2/x/blobs/sha256:ab 16.0 MiB of 32.0 MiB (50%) at 8.0 MiB/s']);
    const small = p.start('GET /v2/', undefined);
    small.add(100);
    small.end(true);
    t.end(true, 'sha256:ab');
    expect(live[live.length - 1]).toBe('');
    now = 4000;
    expect(p.summary()).toBe('recorded 2 exchanges, 16.0 MiB, 1 body stored, in 4.0 s');
  });
});
