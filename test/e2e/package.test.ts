// The package as a user gets it: `npm pack`, installed into an empty project with no network, then used
// through `npx regtape`, `require('regtape')`, `import ... from 'regtape'` and its type declarations.
import { ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeFailure, freePort, isPortOpen, run, RunResult } from '../harness';
import { request } from '../support/http';

jest.setTimeout(120_000);

const ROOT = path.join(__dirname, '../..');
const EXAMPLE = path.join(ROOT, 'examples/hello-pull');
const MANIFEST_DIGEST = 'sha256:ffd83494680ab9ca524f1fc6209df7007e3a0be1c52ce9580f0eaf4d0583d725';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  license: string;
  files: string[];
  bin: Record<string, string>;
  engines: Record<string, string>;
  dependencies: Record<string, string>;
};

/**
 * npm's environment without what `npm test` put there: `npm_config_local_prefix` (and friends) would
 * make npm in the scratch project act on this repository instead. The cache, user config and registry
 * are kept, so a CI that moved them is still honoured.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_cache', 'npm_config_userconfig', 'npm_config_registry']);
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) && !keep.has(k.toLowerCase())) continue;
    if (k === 'INIT_CWD') continue;
    env[k] = v;
  }
  return { ...env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };
}

async function ok(cmd: string, args: string[], cwd: string): Promise<RunResult> {
  const r = await run(cmd, args, { cwd, env: npmEnv(), timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(describeFailure(r));
  return r;
}

let tmp: string;
let tarball: string;
let project: string;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-package-'));

  // 1. Build and pack a copy of the package's inputs, so the shared dist/ that other test files run is
  //    never rewritten under them, and nothing stale in it can end up in the tarball.
  const stage = path.join(tmp, 'stage');
  fs.mkdirSync(stage);
  const inputs = ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'src', ...pkg.files.filter((f) => f !== 'dist')];
  for (const f of inputs) fs.cpSync(path.join(ROOT, f), path.join(stage, f), { recursive: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(stage, 'node_modules'), 'dir');
  await ok('npm', ['run', 'build'], stage);
  const packDir = path.join(tmp, 'pack');
  fs.mkdirSync(packDir);
  // --ignore-scripts: `prepare` would only build again.
  const packed = JSON.parse((await ok('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', packDir], stage)).stdout) as [{ filename: string }];
  tarball = path.join(packDir, packed[0].filename);

  // 2. A scratch project that depends on the tarball, installed offline. Its lockfile pins the production
  //    dependencies to this repository's lockfile, with `resolved` URLs, so npm takes the tarballs from
  //    its cache (filled by the `npm ci` CI runs first) and asks the registry nothing. A plain
  //    `npm install --offline <tarball>` would need full packuments, which `npm ci` does not cache.
  project = path.join(tmp, 'project');
  fs.mkdirSync(project);
  writeScratchProject(project, tarball, (await ok('npm', ['config', 'get', 'registry'], project)).stdout.trim());
  await ok('npm', ['ci', '--offline', '--no-audit', '--no-fund'], project);
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function writeScratchProject(dir: string, tgz: string, registry: string): void {
  const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version: string; dev?: boolean }> };
  const spec = 'file:' + path.relative(dir, tgz);
  const base = registry.replace(/\/*$/, '/');
  const packages: Record<string, object> = {
    '': { name: 'scratch', version: '1.0.0', dependencies: { regtape: spec } },
    'node_modules/regtape': {
      version: pkg.version,
      resolved: spec,
      integrity: 'sha512-' + createHash('sha512').update(fs.readFileSync(tgz)).digest('base64'),
      license: pkg.license,
      dependencies: pkg.dependencies,
      bin: pkg.bin,
      engines: pkg.engines,
    },
  };
  for (const [where, entry] of Object.entries(lock.packages)) {
    if (!where || entry.dev) continue;
    const name = where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length);
    packages[where] = { ...entry, resolved: `${base}${name}/-/${name.split('/').pop()}-${entry.version}.tgz` };
  }
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'scratch', version: '1.0.0', private: true, dependencies: { regtape: spec } }, null, 2));
  fs.writeFileSync(path.join(dir, 'package-lock.json'), JSON.stringify({ name: 'scratch', version: '1.0.0', lockfileVersion: 3, requires: true, packages }, null, 2));
}

test('the tarball holds dist/ (with the sources its maps point at), the README and the docs; no tests or benchmarks', async () => {
  const files = (await ok('tar', ['-tzf', tarball], tmp)).stdout.split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
  expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'docs/fixture-format.md', 'dist/cli.js', 'dist/index.js', 'dist/index.d.ts']));
  expect(files.filter((f) => /^(test|bench|examples|fixtures|scripts|node_modules|\.ci)\//.test(f))).toEqual([]);
  expect(files).toContain('src/index.ts');
  expect(fs.readFileSync(path.join(project, 'node_modules/regtape/dist/cli.js'), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
});

test('npx regtape --help lists record, replay, verify and ls', async () => {
  const r = await ok('npx', ['--no-install', 'regtape', '--help'], project);
  for (const cmd of ['record', 'replay', 'verify', 'ls']) expect(r.stdout).toMatch(new RegExp(`^\\s+${cmd} `, 'm'));
});

describe('npx regtape replay on the bundled example', () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    // Its own process group: npx does not pass SIGTERM on to regtape, the group signal reaches both.
    if (child?.pid && child.exitCode === null && child.signalCode === null) process.kill(-child.pid, 'SIGKILL');
  });

  it('serves the recorded manifest, byte for byte, and stops on SIGTERM', async () => {
    const port = await freePort();
    child = spawn('npx', ['--no-install', 'regtape', 'replay', EXAMPLE, '--port', String(port)], { cwd: project, env: npmEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<void>((resolve) => child!.once('exit', () => resolve()));
    const started = Date.now();
    while (!stdout.includes('\n')) {
      if (child.exitCode !== null || Date.now() - started > 20_000) throw new Error(`regtape did not start; stderr: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(stdout).toContain(`on http://127.0.0.1:${port}`);

    const ping = await request(`http://127.0.0.1:${port}/v2/`);
    expect(ping.status).toBe(200);
    const manifest = await request(`http://127.0.0.1:${port}/v2/demo/hello/manifests/v1`, { headers: [['Accept', OCI_MANIFEST]] });
    expect(manifest.status).toBe(200);
    expect(manifest.headers['content-type']).toBe(OCI_MANIFEST);
    expect('sha256:' + createHash('sha256').update(manifest.body).digest('hex')).toBe(MANIFEST_DIGEST);
    expect(manifest.headers['docker-content-digest']).toBe(MANIFEST_DIGEST);

    process.kill(-child.pid!, 'SIGTERM');
    await exited;
    for (let i = 0; i < 100 && (await isPortOpen(port)); i++) await new Promise((r) => setTimeout(r, 50));
    expect(await isPortOpen(port)).toBe(false);
  });

  it('with --strict, started from node_modules/.bin, exits 1 after a request with no fixture (what a CI job relies on)', async () => {
    const port = await freePort();
    const bin = path.join(project, 'node_modules/.bin/regtape');
    child = spawn(bin, ['replay', EXAMPLE, '--port', String(port), '--strict', '--quiet'], { cwd: project, env: npmEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = new Promise<number | null>((resolve) => child!.once('exit', (c) => resolve(c)));
    const started = Date.now();
    while (!stdout.includes('\n')) {
      if (child.exitCode !== null || Date.now() - started > 20_000) throw new Error(`regtape did not start; stderr: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await request(`http://127.0.0.1:${port}/v2/demo/hello/manifests/v2`, { headers: [['Accept', OCI_MANIFEST]] })).status).toBe(404);
    child.kill('SIGTERM');
    expect(await code).toBe(1);
    expect(stderr).toContain('strict mode: 1 unmatched request(s)');
  });
});

test("require('regtape') and import from 'regtape' both resolve the API", async () => {
  const cjs = await ok('node', ['-e', "const r = require('regtape'); console.log([typeof r.replay, typeof r.record, typeof r.StrictReplayError].join(' '))"], project);
  expect(cjs.stdout.trim()).toBe('function function function');
  const esm = await ok('node', ['--input-type=module', '-e', "import { replay, record, StrictReplayError } from 'regtape'; console.log([typeof replay, typeof record, typeof StrictReplayError].join(' '))"], project);
  expect(esm.stdout.trim()).toBe('function function function');
});

test('the type declarations compile in a strict TypeScript project', async () => {
  fs.writeFileSync(
    path.join(project, 'use.ts'),
    [
      "import { replay, ReplayServer, StrictReplayError } from 'regtape';",
      'export async function check(): Promise<string[]> {',
      "  const registry: ReplayServer = await replay({ fixtures: 'fixtures', port: 0, strict: true });",
      '  const misses = registry.unmatched().map((m) => m.request);',
      '  await registry.close().catch((e: unknown) => { if (!(e instanceof StrictReplayError)) throw e; });',
      '  return misses;',
      '}',
    ].join('\n'),
  );
  const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
  await ok('node', [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'commonjs', '--moduleResolution', 'node', '--typeRoots', path.join(ROOT, 'node_modules/@types'), '--types', 'node', 'use.ts'], project);
});
