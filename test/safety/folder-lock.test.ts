// Item: two recorders on one folder. The second refuses at start naming the holder; a lock left by
// a dead recorder (or a reused pid) is taken over; every fixture a recorder reported written is on
// disk afterwards; and even writers that bypass the lock never overwrite each other's files.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { record } from '../../src';
import { loadFixtures } from '../../src/fixture/files';
import { LOCK_FILE } from '../../src/record/lock';
import { Redactor } from '../../src/record/redact';
import { FixtureWriter } from '../../src/record/writer';
import { checkDirImage, Harness, pushImage, Registry } from '../harness';
import { CliProcess, runCli } from '../support/cli';

jest.setTimeout(180_000);

/** File names a recorder's log reported as written (`... -> NAME`). */
const reported = (stderr: string): string[] => [...stderr.matchAll(/ -> (\S+)$/gm)].map((m) => m[1]);

describe('one recorder per fixtures folder', () => {
  const h = new Harness();
  let reg: Registry;
  let out: string;
  beforeAll(async () => {
    reg = await h.startRegistry({ mode: 'plain' });
    const img = await h.makeImage({ layers: 2, layerSize: 64 * 1024 });
    await pushImage(img, `${reg.host}/test/lock:v1`);
    out = h.tempDir('fixtures');
  });
  afterAll(() => h.cleanup());

  it('the second recorder refuses, naming the holder; after the first stopped, nothing it reported is missing', async () => {
    const a = new CliProcess(['record', '--upstream', reg.url, '--port', '0', '--out', out]);
    h.onCleanup(() => a.stop('SIGKILL').then(() => undefined));
    const aUrl = /on (http:\/\/\S+)/.exec(await a.firstLine())![1];
    const lock = JSON.parse(fs.readFileSync(path.join(out, LOCK_FILE), 'utf8')) as { pid: number };
    expect(lock.pid).toBe(a.child.pid);

    const b = await runCli(['record', '--upstream', reg.url, '--port', '0', '--out', out]);
    expect(b.code).toBe(2);
    expect(b.stderr).toContain(`the fixtures folder ${out} is in use by another regtape recorder (pid ${a.child.pid}`);
    expect(b.stderr).toContain('record into another --out folder');
    expect(b.stderr).not.toMatch(/\n\s+at /);

    checkDirImage((await h.pullToDir(`${new URL(aUrl).host}/test/lock:v1`)).dir);
    expect(await a.stop('SIGTERM')).toBe(0);
    expect(fs.existsSync(path.join(out, LOCK_FILE))).toBe(false);
    const first = reported(a.stderr);
    expect(first.length).toBeGreaterThanOrEqual(4);

    // Free again: a second recording of the same pull appends; both recordings' files are there.
    const c = new CliProcess(['record', '--upstream', reg.url, '--port', '0', '--out', out]);
    h.onCleanup(() => c.stop('SIGKILL').then(() => undefined));
    const cUrl = /on (http:\/\/\S+)/.exec(await c.firstLine())![1];
    checkDirImage((await h.pullToDir(`${new URL(cUrl).host}/test/lock:v1`)).dir);
    expect(await c.stop('SIGTERM')).toBe(0);
    const second = reported(c.stderr);
    const all = [...first, ...second];
    expect(new Set(all).size).toBe(all.length);
    for (const f of all) expect(fs.existsSync(path.join(out, f))).toBe(true);
    const loaded = await loadFixtures([out]);
    expect(loaded.files.length).toBe(all.length);
  });

  it('a lock left by a dead recorder is taken over', async () => {
    const dir = h.tempDir('stale');
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const deadPid = Number(dead.stdout);
    fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: deadPid, host: os.hostname(), since: '2020-01-01T00:00:00Z' }) + '\n');
    const rec = await record({ upstream: reg.url, out: dir, port: 0, log: () => undefined });
    expect(JSON.parse(fs.readFileSync(path.join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    await rec.close();
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
  });

  it('a lock whose pid now belongs to another process (started later) is taken over', async () => {
    const dir = h.tempDir('reused');
    // This very process is alive, but its start time is not the one the lock names.
    fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: process.ppid, started: '1', host: os.hostname(), since: '2020-01-01T00:00:00Z' }) + '\n');
    const rec = await record({ upstream: reg.url, out: dir, port: 0, log: () => undefined });
    expect(JSON.parse(fs.readFileSync(path.join(dir, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    await rec.close();
  });

  it('a live lock in the same library process refuses too', async () => {
    const dir = h.tempDir('twice');
    const one = await record({ upstream: reg.url, out: dir, port: 0, log: () => undefined });
    await expect(record({ upstream: reg.url, out: dir, port: 0, log: () => undefined })).rejects.toThrow(/is in use by another regtape recorder \(pid \d+/);
    await one.close();
  });
});

describe('sequence numbers are safe across processes, even without the lock', () => {
  it('two writers on one folder, the same request 8 times each: 16 files, none overwritten', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-seq-'));
    try {
      const open = (): Promise<FixtureWriter> => FixtureWriter.open({ out, format: 'md', redactor: new Redactor(), log: () => undefined });
      const [w1, w2] = await Promise.all([open(), open()]);
      const capture = (n: number): Parameters<FixtureWriter['write']>[0] => ({
        method: 'GET',
        url: '/v2/test/seq/tags/list',
        reqHeaders: [],
        reqBody: { kind: 'none' },
        status: 200,
        resHeaders: [['content-type', 'application/json']],
        resBody: { kind: 'inline', text: JSON.stringify({ name: 'test/seq', tags: [`t${n}`] }) },
        liveOrigin: 'http://127.0.0.1:1',
        secret: false,
        from: 'test',
      });
      const results = await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? w1 : w2).write(capture(i))));
      const files = results.map((r) => r.file);
      expect(new Set(files).size).toBe(16);
      const bodies = new Set(files.map((f) => /"tags":\["(t\d+)"\]/.exec(fs.readFileSync(f, 'utf8'))![1]));
      expect(bodies.size).toBe(16);
      expect(fs.readdirSync(out).filter((f) => f.endsWith('.md')).length).toBe(16);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
