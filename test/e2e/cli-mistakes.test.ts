// No silent mistakes: every documented flag order works, an empty or wrong folder is an error, a typo
// in a faults file is refused with file:line, flags that do nothing are refused with the reason, an
// https-by-default upstream that speaks plain HTTP says what to type, and the library writes nothing
// to stderr on its own.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { freePort, Harness, pushImage } from '../harness';
import { CliProcess, runCli } from '../support/cli';
import { request } from '../support/http';

jest.setTimeout(120_000);
const ROOT = path.join(__dirname, '../..');
const EXAMPLE = path.join(ROOT, 'examples/hello-pull');
const noStack = (s: string): void => expect(s).not.toMatch(/\n\s+at /);

it('regtape --version prints the version in package.json', async () => {
  const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const r = await runCli([flag]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${version}\n`);
  }
});

describe('every documented flag order of replay --strict works', () => {
  // Each: the folder is loaded (12 exchanges) and strict mode is on (one unmatched request: exit 1).
  const orders: string[][] = [
    ['--strict', EXAMPLE],
    [EXAMPLE, '--strict'],
    ['--strict', 'unused', EXAMPLE],
    ['--strict=unused', EXAMPLE],
    [EXAMPLE, '--strict=unused'],
    ['--quiet', '--strict', EXAMPLE, '--latency', '1'],
  ];
  it.each(orders.map((o) => [o.join(' ').replace(EXAMPLE, 'DIR'), o]))('replay %s', async (_name, args) => {
    const port = await freePort();
    const cli = new CliProcess(['replay', ...(args as string[]), '--port', String(port)]);
    try {
      expect(await cli.firstLine()).toBe(`regtape replaying 12 exchanges from 12 fixture files on http://127.0.0.1:${port}`);
      expect((await request(`http://127.0.0.1:${port}/v2/demo/hello/manifests/nope`)).status).toBe(404);
      expect(await cli.stop('SIGTERM')).toBe(1);
      expect(cli.stderr).toMatch(/regtape: strict mode: 1 unmatched request/);
    } finally {
      await cli.stop('SIGKILL');
    }
  });

  it('--strict with a value that is neither unused nor a path is refused', async () => {
    const r = await runCli(['replay', '--strict', 'unsued', EXAMPLE]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`regtape: --strict takes no value or 'unused' (--strict=unused), not "unsued", and there is no fixtures path of that name`);
  });
});

describe('an empty or wrong folder is an error, unless --allow-empty', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('replay and verify of an empty folder, and of a folder with no fixture in it, exit 2 naming it', async () => {
    const empty = h.tempDir('empty');
    const wrong = h.tempDir('wrong');
    fs.writeFileSync(path.join(wrong, 'README.md'), '# notes\n\nnot a fixture\n');
    fs.writeFileSync(path.join(wrong, 'data.json'), '{}');
    for (const dir of [empty, wrong]) {
      for (const cmd of ['replay', 'verify']) {
        const r = await runCli(cmd === 'replay' ? [cmd, dir, '--port', '0'] : [cmd, dir]);
        expect(r.code).toBe(2);
        expect(r.stderr).toMatch(new RegExp(`^regtape: no fixtures in ${dir}: .*check the path, or pass --allow-empty`));
        noStack(r.stderr);
      }
    }
  });

  it('--allow-empty serves and verifies nothing, exit 0', async () => {
    const empty = h.tempDir('empty');
    const v = await runCli(['verify', empty, '--allow-empty']);
    expect(v.code).toBe(0);
    expect(v.stdout).toContain('0 problems');
    const port = await freePort();
    const cli = new CliProcess(['replay', empty, '--allow-empty', '--port', String(port)]);
    h.onCleanup(() => void cli.stop('SIGKILL'));
    expect(await cli.firstLine()).toBe(`regtape replaying 0 exchanges from 0 fixture files on http://127.0.0.1:${port}`);
    expect(await cli.stop('SIGTERM')).toBe(0);
  });
});

describe('a faults file with a typo or a bad value is refused with file:line', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());
  const cases: Array<[string, string, RegExp]> = [
    ['rout: a typo of route', 'faults:\n  - fault: unavailable\n    rout: manifest\n', /faults\.yaml:3: rule 1: unknown key "rout" \(a rule has fault, method, route, path, nth, bytes, retryAfter\)$/],
    ['an unknown route', 'faults:\n  - fault: unavailable\n    route: manifests\n', /faults\.yaml:3: rule 1: route must be ping, manifest, blob, .*, not "manifests"$/],
    ['nth 0 in the second rule', 'faults:\n  - fault: cut\n    bytes: 10\n  - fault: toomanyrequests\n    nth: 0\n', /faults\.yaml:5: rule 2: nth must be a whole number >= 1, not 0$/],
    ['an unknown fault', 'faults:\n\n  - fault: slow\n', /faults\.yaml:3: rule 1: fault must be toomanyrequests, unavailable, cut or expire-token .*, not "slow"$/],
    ['a key beside faults:', 'fault:\n  - fault: cut\n', /faults\.yaml:1: unknown key "fault": the file holds only 'faults:'/],
    ['a duplicate key', 'faults:\n  - fault: cut\n    bytes: 1\n    bytes: 2\n', /faults\.yaml:4: /],
  ];
  it.each(cases)('%s', async (_name, text, message) => {
    const file = path.join(h.tempDir('faults'), 'faults.yaml');
    fs.writeFileSync(file, text);
    const r = await runCli(['replay', EXAMPLE, '--faults', file, '--port', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(new RegExp(`^regtape: ${file.replace(/[.]/g, '\\.')}`));
    expect(r.stderr.trim()).toMatch(message);
  });
});

describe('flags that do nothing in the chosen mode are refused with the reason', () => {
  it.each([
    ['--upstream', 'http://127.0.0.1:5000'],
    ['--out', 'somewhere'],
    ['--format', 'yaml'],
  ])('replay %s without --record-missing', async (flag, value) => {
    const r = await runCli(['replay', EXAMPLE, flag, value, '--port', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`regtape: ${flag} does nothing in replay without --record-missing (replay serves only what the fixtures hold): add --record-missing, or drop ${flag}`);
  });
});

describe('upstreams', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('an --upstream without a scheme is https; a plain-HTTP registry gets told to use http://HOST:PORT', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const r = await runCli(['record', '--upstream', reg.host, '--port', '0', '--out', h.tempDir('out')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(new RegExp(`^regtape: upstream https://${reg.host} answered in plain HTTP, not TLS \\(\\w+\\): use --upstream http://${reg.host} \\(an --upstream without a scheme is taken as https\\)$`));
  });

  it('the library writes nothing to stderr when no log is given (record, a pull through it, replay)', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 1, layerSize: 32 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/lib/quiet:v1`);
    const out = h.tempDir('quiet');
    const script = `
      const { record, replay } = require(${JSON.stringify(path.join(ROOT, 'dist/index.js'))});
      const get = (u) => fetch(u, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } }).then((r) => r.arrayBuffer().then(() => r.status));
      (async () => {
        const rec = await record({ upstream: ${JSON.stringify(reg.url)}, out: ${JSON.stringify(out)}, port: 0 });
        const s1 = await get(rec.url + '/v2/lib/quiet/manifests/v1');
        const s2 = await get(rec.url + '/v2/lib/quiet/manifests/nope');
        await rec.close();
        const rep = await replay({ fixtures: ${JSON.stringify(out)}, port: 0 });
        const s3 = await get(rep.url + '/v2/lib/quiet/manifests/v1');
        const s4 = await get(rep.url + '/v2/lib/quiet/manifests/unrecorded');
        await rep.close();
        process.stdout.write([s1, s2, s3, s4].join(' '));
      })();`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(stdout).toBe('200 404 200 404');
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });
});

it('each replay log line names the fixture file:line that answered', async () => {
  const port = await freePort();
  const cli = new CliProcess(['replay', EXAMPLE, '--port', String(port)], ROOT);
  try {
    await cli.firstLine();
    expect((await request(`http://127.0.0.1:${port}/v2/`)).status).toBe(200);
    expect(await cli.stop('SIGTERM')).toBe(0);
    expect(cli.stderr).toMatch(/^GET \/v2\/ 200 2B [\d.]+ms <- examples\/hello-pull\/GET_v2\.7e186c08\.md:3$/m);
  } finally {
    await cli.stop('SIGKILL');
  }
});
