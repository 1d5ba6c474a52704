// Re-recording produces no diff: the same pulls (skopeo copy and inspect, docker manifest inspect, the
// docker daemon) recorded twice through the `regtape record` CLI, at different times, with regtape on
// different ports and the Hub-like registry (token server, CDN) started afresh on different ports, give
// two folders that are identical byte for byte. Then the second folder serves the daemon offline.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkDirImage, describeFailure, Dockerd, dockerManifestInspect, freePort, Harness, Image, pushImage, run, skopeo, startDockerd } from '../harness';
import { CliProcess } from '../support/cli';

jest.setTimeout(300_000);

const REPO = 'library/alpine';
const TAG = 'stable';
const ALICE = 'alice:alicepw';

/** Every file under dir (relative, sorted), bodies included. */
function filesUnder(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p, base));
    else out.push(path.relative(base, p));
  }
  return out.sort();
}

describe('two recordings of the same pulls differ in no file', () => {
  const h = new Harness();
  let image: Image;
  let dockerd: Dockerd;
  const folders: string[] = [];
  const ports: number[] = [];
  const registryPorts: number[] = [];
  const logs: string[] = [];

  let storage: string | undefined;

  /**
   * One recording session: the registry (with its token server and CDN) started on new ports over the
   * storage of the first session (copied with its times: the CDN's Last-Modified is a real answer, and
   * the same), regtape on a new port, four clients.
   */
  async function recordSession(): Promise<string> {
    const reg = await h.startRegistry({ mode: 'hub' });
    registryPorts.push(reg.port, Number(new URL(reg.tokenUrl!).port), Number(new URL(reg.cdnUrl!).port));
    if (!storage) {
      await pushImage(image, `${reg.host}/${REPO}:${TAG}`, ALICE);
      storage = h.tempDir('storage');
      fs.cpSync(reg.dataDir, storage, { recursive: true, preserveTimestamps: true });
    } else fs.cpSync(storage, reg.dataDir, { recursive: true, preserveTimestamps: true });
    const out = h.tempDir('recording');
    let port = await freePort();
    while (ports.includes(port)) port = await freePort();
    ports.push(port);
    const rec = new CliProcess(['record', '--upstream', reg.url, '--port', String(port), '--out', out]);
    h.onCleanup(() => void rec.stop('SIGKILL'));
    await rec.firstLine();
    const at = `127.0.0.1:${port}`;
    // skopeo with credentials, skopeo anonymous, the docker CLI, the docker daemon
    checkDirImage((await h.pullToDir(`${at}/${REPO}:${TAG}`, ALICE)).dir);
    const inspect = await skopeo(['inspect', '--tls-verify=false', `docker://${at}/${REPO}:${TAG}`]);
    expect(inspect.code).toBe(0);
    const cli = await dockerManifestInspect(`${at}/${REPO}:${TAG}`);
    expect(cli.code).toBe(0);
    const pull = await dockerd.docker(['pull', `${at}/${REPO}:${TAG}`]);
    if (pull.code !== 0) throw new Error(`docker pull: ${describeFailure(pull)}\n${dockerd.logs()}`);
    const rmi = await dockerd.docker(['rmi', `${at}/${REPO}:${TAG}`]);
    expect(rmi.code).toBe(0);
    expect(await rec.stop('SIGINT')).toBe(0);
    logs.push(rec.stderr);
    await reg.stop();
    return out;
  }

  beforeAll(async () => {
    image = await h.makeImage({ layers: 2, layerSize: 128 * 1024, tag: TAG });
    dockerd = await startDockerd({ tmp: h.tmp });
    h.onCleanup(() => dockerd.stop());
    folders.push(await recordSession());
    folders.push(await recordSession());
  });
  afterAll(() => h.cleanup());

  it('the sessions really differed: regtape ports, registry, token server and CDN ports', () => {
    expect(ports[0]).not.toBe(ports[1]);
    expect(new Set(registryPorts).size).toBe(6);
  });

  it('the two folders hold the same files, byte for byte', async () => {
    const [a, b] = folders;
    const files = filesUnder(a);
    expect(files.length).toBeGreaterThan(8);
    expect(filesUnder(b)).toEqual(files);
    const differ: string[] = [];
    for (const f of files) {
      if (fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f)))) continue;
      const d = await run('diff', ['-u', path.join(a, f), path.join(b, f)]);
      differ.push(d.stdout);
    }
    expect(differ.join('\n')).toBe('');
  });

  it('a pull leaves no .2/.3 copies of the same answer', () => {
    expect(filesUnder(folders[1]).filter((f) => /\.[0-9a-f]{8}\.\d+\.md$/.test(f))).toEqual([]);
  });

  it('the recording, normalised, still serves the daemon offline', async () => {
    const port = await freePort();
    const rep = new CliProcess(['replay', folders[1], '--port', String(port), '--strict']);
    h.onCleanup(() => void rep.stop('SIGKILL'));
    await rep.firstLine();
    const ref = `127.0.0.1:${port}/${REPO}:${TAG}`;
    const pull = await dockerd.docker(['pull', ref]);
    if (pull.code !== 0) throw new Error(`docker pull: ${describeFailure(pull)}\n${rep.stderr}`);
    const info = JSON.parse((await dockerd.docker(['image', 'inspect', '--format', '{{json .}}', ref])).stdout) as { Id: string };
    expect(info.Id).toBe(image.configDigest);
    checkDirImage((await h.pullToDir(ref, ALICE)).dir);
    expect(await rep.stop('SIGTERM')).toBe(0);
  });
});

describe('--keep-noise and the Date on replay', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('record --keep-noise writes Date, token times and local ports as they were', async () => {
    const reg = await h.startRegistry({ mode: 'token' });
    const image = await h.makeImage({ layers: 1, layerSize: 16 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/raw/img:v1`, ALICE);
    const out = h.tempDir('raw');
    const port = await freePort();
    const rec = new CliProcess(['record', '--upstream', reg.url, '--port', String(port), '--out', out, '--keep-noise']);
    h.onCleanup(() => void rec.stop('SIGKILL'));
    await rec.firstLine();
    checkDirImage((await h.pullToDir(`127.0.0.1:${port}/raw/img:v1`, ALICE)).dir);
    expect(await rec.stop('SIGINT')).toBe(0);
    const tokenPort = new URL(reg.tokenUrl!).port;
    const names = fs.readdirSync(out);
    const token = names.find((n) => n.startsWith(`GET_token_http_127.0.0.1-${tokenPort}_token.`));
    expect(token).toBeDefined();
    const text = fs.readFileSync(path.join(out, token!), 'utf8');
    expect(text).toMatch(/\n {2}date: '\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT'/);
    expect(text).toMatch(/"issued_at":"\d{4}-\d\d-\d\dT/);
    expect(text).toContain(`# recorded by regtape from http://127.0.0.1:${tokenPort}`);
  });

  it('replay answers with the current Date, not the recorded one', async () => {
    const example = path.join(__dirname, '../../examples/hello-pull');
    const recorded = 'Thu, 26 Nov 2026 22:45:20 GMT';
    expect(fs.readFileSync(path.join(example, 'GET_v2.7e186c08.md'), 'utf8')).toContain(`date: '${recorded}'`);
    const port = await freePort();
    const rep = new CliProcess(['replay', example, '--port', String(port)]);
    h.onCleanup(() => void rep.stop('SIGKILL'));
    await rep.firstLine();
    const before = Math.floor(Date.now() / 1000) * 1000;
    const r = await fetch(`http://127.0.0.1:${port}/v2/`);
    expect(r.status).toBe(200);
    const date = r.headers.get('date');
    expect(r.headers.get('docker-distribution-api-version')).toBe('registry/2.0'); // answered from the recording
    expect(date).not.toBe(recorded);
    expect(new Date(date!).getTime()).toBeGreaterThanOrEqual(before);
    await rep.stop('SIGTERM');
  });
});
