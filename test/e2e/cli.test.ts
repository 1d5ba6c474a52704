// The command line as a user meets it: the README's first command on the bundled example, and each
// user mistake answered with one clear line and a non-zero exit, never a stack trace.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkDirImage, dockerManifestInspect, freePort, Harness, pushImage, skopeo } from '../harness';
import { CliProcess, runCli } from '../support/cli';
import { request } from '../support/http';

jest.setTimeout(120_000);
const EXAMPLE = path.join(__dirname, '../../examples/hello-pull');

it('the built CLI is executable, so `npx regtape` runs it from a checkout', () => {
  expect(fs.statSync(path.join(__dirname, '../../dist/cli.js')).mode & 0o111).toBe(0o111);
});

describe('regtape replay on the bundled example', () => {
  const h = new Harness();
  let cli: CliProcess;
  let port: number;
  beforeAll(async () => {
    port = await freePort();
    cli = new CliProcess(['replay', EXAMPLE, '--port', String(port)]);
    h.onCleanup(() => void cli.stop('SIGKILL'));
    expect(await cli.firstLine()).toBe(`regtape replaying 12 exchanges from 12 fixture files on http://127.0.0.1:${port}`);
  });
  afterAll(() => h.cleanup());

  it('serves skopeo inspect, skopeo copy and docker manifest inspect, as the README says', async () => {
    const inspect = await skopeo(['inspect', '--tls-verify=false', `docker://127.0.0.1:${port}/demo/hello:v1`]);
    expect(inspect.stderr).toBe('');
    expect(JSON.parse(inspect.stdout).Digest).toBe('sha256:ffd83494680ab9ca524f1fc6209df7007e3a0be1c52ce9580f0eaf4d0583d725');
    const pulled = await h.pullToDir(`127.0.0.1:${port}/demo/hello:v1`);
    expect(checkDirImage(pulled.dir).manifestDigest).toBe('sha256:ffd83494680ab9ca524f1fc6209df7007e3a0be1c52ce9580f0eaf4d0583d725');
    const docker = await dockerManifestInspect(`127.0.0.1:${port}/demo/hello:v1`);
    expect(docker.code).toBe(0);
    expect(JSON.parse(docker.stdout).layers[0].digest).toBe('sha256:bf047673486a9129e2ac1a0989e966fe99c525a33f4f018c5ba965ef29a1429e');
  });

  it('logs one line per request and, on SIGTERM, a summary naming what went unmatched; exit 0', async () => {
    await request(`http://127.0.0.1:${port}/v2/demo/hello/manifests/nope`);
    const code = await cli.stop('SIGTERM');
    expect(code).toBe(0);
    expect(cli.stderr).toMatch(/GET \/v2\/demo\/hello\/manifests\/nope 404 \d+B [\d.]+ms UNMATCHED/);
    expect(cli.stderr).toMatch(/regtape: served \d+ requests, 1 unmatched, \d+ fixtures unused/);
    expect(cli.stderr).toContain('regtape: unmatched GET /v2/demo/hello/manifests/nope');
  });
});

describe('user mistakes: one clear line, non-zero exit, no stack trace', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-cli-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const noStack = (s: string): void => expect(s).not.toMatch(/\n\s+at /);

  it('an unknown flag', async () => {
    const r = await runCli(['replay', EXAMPLE, '--prot', '1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("error: unknown option '--prot'");
    noStack(r.stderr);
  });

  it('a bad port', async () => {
    const r = await runCli(['record', '--port', 'eighty']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("option '--port <n>' argument 'eighty' is invalid");
  });

  it('a missing folder', async () => {
    const r = await runCli(['replay', path.join(tmp, 'nope')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`regtape: fixtures path not found: ${path.join(tmp, 'nope')}`);
  });

  it('a broken fixture names file and line', async () => {
    const dir = path.join(tmp, 'broken');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'x.md'), '## in\n```\nurl /v2/\nmethod GET\n```\n## out\n```\nstatus 20\n```\n');
    const r = await runCli(['replay', dir]);
    expect(r.code).toBe(3);
    expect(r.stderr.trim()).toMatch(/^regtape: .*x\.md:8: status 20 is not an HTTP status \(100-599\)$/);
    noStack(r.stderr);
  });

  it('a port in use', async () => {
    const port = await freePort();
    const first = new CliProcess(['replay', EXAMPLE, '--port', String(port), '--quiet']);
    try {
      await first.firstLine();
      const r = await runCli(['replay', EXAMPLE, '--port', String(port)]);
      expect(r.code).toBe(2);
      expect(r.stderr.trim()).toBe(`regtape: port ${port} on 127.0.0.1 is already in use: stop what runs there, or pick another with --port`);
    } finally {
      await first.stop();
    }
  });

  it('an unreachable upstream', async () => {
    const port = await freePort();
    const r = await runCli(['record', '--upstream', `http://127.0.0.1:${port}`, '--port', '0', '--out', path.join(tmp, 'rec')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`regtape: upstream http://127.0.0.1:${port} is unreachable (ECONNREFUSED): check --upstream and the network`);
  });
});

describe('regtape record from the command line', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('prints where it listens, logs each exchange, and on SIGINT writes what is in flight and exits 0', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 1, layerSize: 64 * 1024 });
    await pushImage(image, `${reg.host}/cli/img:v1`);
    const out = h.tempDir('out');
    const port = await freePort();
    const rec = new CliProcess(['record', '--upstream', reg.url, '--port', String(port), '--out', out, '--format', 'yaml']);
    h.onCleanup(() => void rec.stop('SIGKILL'));
    expect(await rec.firstLine()).toBe(`regtape recording on http://127.0.0.1:${port} -> ${reg.url}, fixtures in ${out}`);
    await h.pullToDir(`127.0.0.1:${port}/cli/img:v1`);
    expect(await rec.stop('SIGINT')).toBe(0);
    expect(rec.stderr).toMatch(/GET \/v2\/cli\/img\/manifests\/v1 200 \d+B \d+ms -> GET_cli_img_manifests_v1\.[0-9a-f]{8}\.yaml/);
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.yaml')).length).toBe(4);
  });
});
