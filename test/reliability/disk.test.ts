// Disk faults while recording: the fixtures folder is on a 1 MiB tmpfs that fills up, then is
// remounted read-only (chmod does not stop root, a read-only mount does). `regtape record` runs as
// a real process. Each time: the client gets an error or its complete answer (never a silently
// short one), the recorder says why on its log, nothing half-written is loadable, it keeps running.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadFixtures } from '../../src';
import { CliProcess } from '../support/cli';
import { FakeUpstream, GeneratedBlob } from '../support/fake-upstream';
import { allFiles, fixtureFiles, get, sha256, tempLeftovers, waitFor } from '../support/reliability';

jest.setTimeout(60_000);

const MB = 1024 * 1024;
const MANIFEST = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', layers: [], note: 'x'.repeat(2000) });

/** Can this process mount a tmpfs? (root, with the capability; probed once, unmounted at once) */
function canMount(): boolean {
  if (process.getuid?.() !== 0) return false;
  const probe = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-mountprobe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { stdio: 'ignore' });
    execFileSync('umount', [probe], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    fs.rmSync(probe, { recursive: true, force: true });
  }
}

const mountable = canMount();
// No silent skip: where a tmpfs cannot be mounted (not root), these tests fail and say why.

describe('disk faults while recording (fixtures on a 1 MiB tmpfs)', () => {
  let base: string;
  let mnt: string;
  let out: string;
  let up: FakeUpstream;
  let rec: CliProcess;
  let url: string;
  let mounted = false;
  const layer = new GeneratedBlob(4 * MB);
  const layer2 = new GeneratedBlob(3 * MB);
  const small = new GeneratedBlob(100 * 1024); // over the inline limit: goes to the body store
  let layerUrl: string;
  let layer2Url: string;
  let smallUrl: string;

  const stderrSince = (mark: number): string => rec.stderr.slice(mark);
  const alive = (): boolean => rec.child.exitCode === null && rec.child.signalCode === null;
  const loadsCleanly = async (): Promise<void> => {
    await expect(loadFixtures([out])).resolves.toBeDefined();
  };

  beforeAll(async () => {
    if (!mountable) throw new Error('these tests mount a 1 MiB tmpfs: run them as root (CI does)');
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-disk-'));
    mnt = path.join(base, 'mnt');
    fs.mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    mounted = true;
    out = path.join(mnt, 'fixtures');
    up = await FakeUpstream.start();
    layerUrl = up.blob('disk/img', layer);
    layer2Url = up.blob('disk/img', layer2);
    smallUrl = up.blob('disk/img', small);
    up.manifest('disk/img', 'v1', MANIFEST);
    up.manifest('disk/img', 'v2', MANIFEST);
    up.manifest('disk/img', 'v3', MANIFEST);
    rec = new CliProcess(['record', '--upstream', up.url, '--port', '0', '--out', out]);
    url = /recording on (http:\/\/\S+)/.exec(await rec.firstLine())![1];
    expect((await get(`${url}/v2/`)).status).toBe(200);
    await waitFor(() => fixtureFiles(out).length === 1, 'the first ping fixture');
  });

  afterAll(async () => {
    await rec?.stop('SIGKILL');
    await up?.close();
    if (mounted) {
      try {
        execFileSync('mount', ['-o', 'remount,rw', mnt], { stdio: 'ignore' });
      } catch {
        /* not mounted any more */
      }
      try {
        execFileSync('umount', [mnt], { stdio: 'ignore' });
      } catch {
        execFileSync('umount', ['-l', mnt], { stdio: 'ignore' }); // lazy: busy or not, it goes
      }
    }
    if (base) fs.rmSync(base, { recursive: true, force: true });
  });

  it('out of space mid-layer: the client is cut, the log says ENOSPC, nothing is stored, the recorder goes on', async () => {
    const mark = rec.stderr.length;
    const r = await get(`${url}${layerUrl}`);
    expect(r.complete && r.body.length === layer.size).toBe(false); // an error, never a complete-looking short body
    if (r.status === 200) expect(r.body.length).toBeLessThan(layer.size);
    else expect(r.status).toBeGreaterThanOrEqual(500);
    await waitFor(() => tempLeftovers(out).length === 0, `bodies/.tmp emptied (has ${tempLeftovers(out).join(', ')})`);
    expect(allFiles(out).filter((f) => f.includes(layer.hex.slice(0, 12)))).toEqual([]);
    await loadsCleanly();
    expect(alive()).toBe(true);
    // the space was given back: the recorder records again
    const s = await get(`${url}${smallUrl}`);
    expect(sha256(s.body)).toBe(small.digest);
    await waitFor(() => allFiles(out).includes(path.join('bodies', 'sha256', small.hex)), 'the small blob stored');
    // its fixture is written after its body: the next test counts fixtures, so wait for it here
    await waitFor(() => fixtureFiles(out).some((f) => f.includes(small.hex.slice(0, 12))), "the small blob's fixture");
    // and it said why the layer was not recorded
    expect(stderrSince(mark)).toMatch(/ENOSPC|no space/i);
  });

  it('disk completely full: a manifest is answered in full, its fixture is not written, the log says so, no temp file is left', async () => {
    // fill every last byte
    const filler = path.join(mnt, 'filler');
    const fd = fs.openSync(filler, 'w');
    try {
      const block = Buffer.alloc(4096, 1);
      for (let i = 0; i < 1024; i++) fs.writeSync(fd, block);
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
    } finally {
      fs.closeSync(fd);
    }
    const mark = rec.stderr.length;
    const before = fixtureFiles(out);
    const r = await get(`${url}/v2/disk/img/manifests/v1`);
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(r.body.toString()).toBe(MANIFEST);
    await waitFor(() => /could not write a fixture|ENOSPC|no space/i.test(stderrSince(mark)), 'a log line about the failed fixture write');
    expect(stderrSince(mark)).toContain('/v2/disk/img/manifests/v1');
    expect(fixtureFiles(out)).toEqual(before);
    await loadsCleanly();
    expect(alive()).toBe(true);
    fs.rmSync(filler);
    expect((await get(`${url}/v2/disk/img/manifests/v2`)).status).toBe(200);
    await waitFor(() => fixtureFiles(out).some((f) => f.startsWith('GET_disk_img_manifests_v2.')), 'the v2 manifest recorded once space is back');
    // a failed write must not leave its temp file behind (it holds disk space, and nothing removes it); the
    // successful write's temp file is linked into place first and removed just after, so wait for that
    await waitFor(() => tempLeftovers(out).length === 0, `no temp files left in ${out} (have ${tempLeftovers(out).join(', ')})`);
  });

  it('read-only fixtures folder: layers are cut with a clear EROFS log line, manifests answered, nothing changes, it keeps running', async () => {
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
    try {
      const filesBefore = allFiles(out);
      const mark = rec.stderr.length;
      const r = await get(`${url}${layer2Url}`);
      expect(r.complete && r.body.length === layer2.size).toBe(false);
      const m = await get(`${url}/v2/disk/img/manifests/v3`);
      expect(m.status).toBe(200);
      expect(m.body.toString()).toBe(MANIFEST);
      await waitFor(() => /could not write a fixture.*manifests\/v3/.test(stderrSince(mark)), 'a log line about the failed manifest fixture write');
      expect(alive()).toBe(true);
      expect((await get(`${url}/v2/`)).status).toBe(200);
      expect(allFiles(out)).toEqual(filesBefore);
      await loadsCleanly();
      // why the layer was not recorded: the log names the cause, not only "connection closed"
      const layerLines = stderrSince(mark).split('\n').filter((l) => l.includes(layer2.hex));
      expect(layerLines.join('\n')).toMatch(/EROFS|read-only/i);
    } finally {
      execFileSync('mount', ['-o', 'remount,rw', mnt]);
    }
  });
});
