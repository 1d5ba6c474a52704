// `regtape replay DIR [flags] -- CMD ARGS...` as a CI job runs it: the command gets REGTAPE_URL and
// REGTAPE_HOST, regtape exits with the command's code (or 1 when --strict saw a miss), passes signals
// on, writes --report, and --log-format json gives one parseable object per stderr line.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Harness, freePort } from '../harness';
import { CliProcess, runCli } from '../support/cli';
import { request } from '../support/http';

jest.setTimeout(120_000);
const EXAMPLE = path.join(__dirname, '../../examples/hello-pull');
const DIGEST = 'sha256:ffd83494680ab9ca524f1fc6209df7007e3a0be1c52ce9580f0eaf4d0583d725';
const NODE = process.execPath;
/** A node one-liner as the command under test: `fetch` against the replay, then exit with `code`. */
const fetchThenExit = (urlPath: string, code: number): string[] => [NODE, '-e', `fetch(process.env.REGTAPE_URL + ${JSON.stringify(urlPath)}).then((r) => r.text()).then(() => process.exit(${code}))`];

async function exec(args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = new CliProcess(args, undefined, env);
  const code = await p.exited;
  return { code, stdout: p.stdout, stderr: p.stderr };
}

describe('regtape replay DIR -- CMD', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it("passes the command's exit code through: 0 and 3; REGTAPE_URL and REGTAPE_HOST name the replay", async () => {
    const check = `const u = new URL(process.env.REGTAPE_URL); if (u.host !== process.env.REGTAPE_HOST) process.exit(9);
      fetch(process.env.REGTAPE_URL + '/__regtape/health').then((r) => r.json()).then((j) => { console.log(JSON.stringify(j)); process.exit(Number(process.argv[1])); })`;
    const ok = await exec(['replay', EXAMPLE, '--port', '0', '--', NODE, '-e', check, '0']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ status: 'serving', exchanges: 12 }); // the command's stdout is passed through alone
    expect(ok.stderr).toMatch(/^regtape replaying 12 exchanges from 12 fixture files on http:\/\/127\.0\.0\.1:\d+; running /);
    const three = await exec(['replay', EXAMPLE, '--port', '0', '--', NODE, '-e', check, '3']);
    expect(three.code).toBe(3);
  });

  it('a skopeo inspect run as the command reaches the replay through REGTAPE_HOST', async () => {
    const home = h.tempDir('home');
    fs.writeFileSync(path.join(home, 'registries.conf'), '');
    const env = { HOME: home, XDG_CONFIG_HOME: home, XDG_DATA_HOME: home, XDG_RUNTIME_DIR: home, REGISTRY_AUTH_FILE: path.join(home, 'auth.json') };
    const r = await exec(['replay', EXAMPLE, '--port', '0', '--strict', '--', 'sh', '-c', `skopeo --registries-conf ${home}/registries.conf inspect --tls-verify=false "docker://$REGTAPE_HOST/demo/hello:v1"`], env);
    expect(r.stderr).not.toMatch(/unmatched [GH]/);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).Digest).toBe(DIGEST);
  });

  it('--strict: 1 when the command passed but a request went unmatched; the command’s own failure wins', async () => {
    const strict = await exec(['replay', EXAMPLE, '--port', '0', '--strict', '--', ...fetchThenExit('/v2/demo/hello/manifests/v9', 0)]);
    expect(strict.code).toBe(1);
    expect(strict.stderr).toContain('regtape: unmatched GET /v2/demo/hello/manifests/v9 (nearest GET /v2/demo/hello/manifests/v1');
    expect(strict.stderr).toContain('regtape: strict mode: 1 unmatched request(s)');
    const both = await exec(['replay', EXAMPLE, '--port', '0', '--strict', '--', ...fetchThenExit('/v2/demo/hello/manifests/v9', 4)]);
    expect(both.code).toBe(4);
    const served = await exec(['replay', EXAMPLE, '--port', '0', '--strict', '--', ...fetchThenExit('/v2/', 0)]);
    expect(served.code).toBe(0);
    const unused = await exec(['replay', EXAMPLE, '--port', '0', '--strict=unused', '--', ...fetchThenExit('/v2/', 0)]);
    expect(unused.code).toBe(1);
    expect(unused.stderr).toContain('regtape: strict mode: 11 unused fixture(s)');
    const lax = await exec(['replay', EXAMPLE, '--port', '0', '--', ...fetchThenExit('/v2/nope', 0)]);
    expect(lax.code).toBe(0);
  });

  it('forwards SIGTERM and SIGINT to the command and exits as it did', async () => {
    const script = `process.on('SIGTERM', () => { console.log('got SIGTERM'); process.exit(7); }); console.log('ready'); setInterval(() => undefined, 1000);`;
    const term = new CliProcess(['replay', EXAMPLE, '--port', '0', '--', NODE, '-e', script]);
    h.onCleanup(() => void term.stop('SIGKILL'));
    expect(await term.firstLine()).toBe('ready');
    term.child.kill('SIGTERM');
    expect(await term.exited).toBe(7);
    expect(term.stdout).toBe('ready\ngot SIGTERM\n');

    // no handler: the command dies of the signal, and regtape exits 128+2 as a shell would say it
    const int = new CliProcess(['replay', EXAMPLE, '--port', '0', '--', NODE, '-e', `console.log('ready'); setInterval(() => undefined, 1000);`]);
    h.onCleanup(() => void int.stop('SIGKILL'));
    expect(await int.firstLine()).toBe('ready');
    int.child.kill('SIGINT');
    expect(await int.exited).toBe(130);
    expect(int.stderr).toContain('regtape: served 0 requests');
  });

  it('a command that cannot start is 127 with one clear line; nothing after -- is an error', async () => {
    const missing = await exec(['replay', EXAMPLE, '--port', '0', '--', 'regtape-no-such-command-xyz', 'a']);
    expect(missing.code).toBe(127);
    expect(missing.stderr).toContain('regtape: cannot run "regtape-no-such-command-xyz": command not found');
    const empty = await runCli(['replay', EXAMPLE, '--port', '0', '--']);
    expect(empty.code).toBe(2);
    expect(empty.stderr.trim()).toBe("regtape: nothing after '--': give the command to run against the replay, e.g. regtape replay fixtures/ -- npm test");
  });

  it('--report FILE: the summary JSON, as GET /__regtape/summary answers it, written at shutdown', async () => {
    const dir = h.tempDir('report');
    const file = path.join(dir, 'sub', 'summary.json');
    const live = path.join(dir, 'live.json');
    // the command saves the live summary too, to compare the two shapes
    const cmd = `const fs = require('fs'); const u = process.env.REGTAPE_URL;
      (async () => { await fetch(u + '/v2/').then((r) => r.text()); for (let i = 0; i < 2; i++) await fetch(u + '/v2/demo/hello/manifests/v9').then((r) => r.text());
        fs.writeFileSync(${JSON.stringify(live)}, await fetch(u + '/__regtape/summary').then((r) => r.text())); })();`;
    const r = await exec(['replay', EXAMPLE, '--port', '0', '--report', file, '--', NODE, '-e', cmd]);
    expect(r.code).toBe(0);
    const report = JSON.parse(fs.readFileSync(file, 'utf8'));
    expect(report).toEqual(JSON.parse(fs.readFileSync(live, 'utf8')));
    expect(report.served).toBe(1);
    expect(report.unmatchedTotal).toBe(2);
    expect(report.unmatched).toEqual([{ request: 'GET /v2/demo/hello/manifests/v9', count: 2, nearest: expect.arrayContaining([expect.objectContaining({ request: 'GET /v2/demo/hello/manifests/v1' })]) }]);
    expect(report.unused).toHaveLength(11);
    expect(report.recorded).toEqual([]);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['summary.json']); // no temp file left

    // without a command: written when SIGTERM stops the server
    const port = await freePort();
    const file2 = path.join(dir, 'server.json');
    const server = new CliProcess(['replay', EXAMPLE, '--port', String(port), '--report', file2, '--quiet']);
    h.onCleanup(() => void server.stop('SIGKILL'));
    await server.firstLine();
    await request(`http://127.0.0.1:${port}/v2/`);
    expect(fs.existsSync(file2)).toBe(false);
    expect(await server.stop('SIGTERM')).toBe(0);
    expect(JSON.parse(fs.readFileSync(file2, 'utf8'))).toMatchObject({ served: 1, unmatched: [], unmatchedTotal: 0 });
  });

  it('--log-format json: every stderr line is one JSON object; request lines carry method, url, status, bytes, ms, answer, outcome', async () => {
    const r = await exec(['replay', EXAMPLE, '--port', '0', '--log-format', 'json', '--strict', '--', NODE, '-e',
      `(async () => { const u = process.env.REGTAPE_URL; await fetch(u + '/v2/').then((r) => r.text()); await fetch(u + '/v2/demo/hello/manifests/v9').then((r) => r.text()); })();`]);
    expect(r.code).toBe(1);
    const lines = r.stderr.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const requests = lines.filter((l) => 'method' in l);
    expect(requests).toEqual([
      { time: expect.any(String), method: 'GET', url: '/v2/', status: 200, bytes: 2, ms: expect.any(Number), answer: expect.stringMatching(/GET_v2\.7e186c08\.md:\d+$/), outcome: 'served' },
      { time: expect.any(String), method: 'GET', url: '/v2/demo/hello/manifests/v9', status: 404, bytes: expect.any(Number), ms: expect.any(Number), answer: expect.stringContaining('no fixture for GET /v2/demo/hello/manifests/v9'), outcome: 'unmatched' },
    ]);
    const messages = lines.filter((l) => !('method' in l));
    for (const m of messages) expect(m).toEqual({ time: expect.any(String), level: expect.stringMatching(/^(info|warn)$/), message: expect.stringMatching(/^regtape/) });
    expect(messages.map((m) => m.message)).toContain('regtape: strict mode: 1 unmatched request(s)');
    const bad = await runCli(['replay', EXAMPLE, '--log-format', 'xml']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("option '--log-format <format>' argument 'xml' is invalid. expected 'text' or 'json'");
  });

  it('--port defaults to $REGTAPE_PORT', async () => {
    const port = await freePort();
    const p = new CliProcess(['replay', EXAMPLE, '--quiet'], undefined, { REGTAPE_PORT: String(port) });
    h.onCleanup(() => void p.stop('SIGKILL'));
    expect(await p.firstLine()).toBe(`regtape replaying 12 exchanges from 12 fixture files on http://127.0.0.1:${port}`);
    expect((await request(`http://127.0.0.1:${port}/__regtape/health`)).status).toBe(200);
    expect(await p.stop()).toBe(0);
  });
});
