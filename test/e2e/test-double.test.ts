// regtape as a test double in CI: strict mode, record-missing, record sequences and --overwrite,
// fault injection seen by a real client and by direct HTTP checks, and the API from ESM and CJS.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { record, replay, StrictReplayError } from '../../src';
import { checkDirImage, freePort, Harness, Image, Registry, pushImage, skopeo } from '../harness';
import { CliProcess } from '../support/cli';
import { request } from '../support/http';
import { listFiles } from '../support/secrets';

jest.setTimeout(120_000);
const quiet = (): void => undefined;
const DIST = path.join(__dirname, '../../dist/index.js');

describe('regtape as a test double', () => {
  const h = new Harness();
  let reg: Registry;
  let a: Image;
  let b: Image;
  let fixtures: string;

  beforeAll(async () => {
    reg = await h.startRegistry({ mode: 'token' });
    a = await h.makeImage({ layers: 1, layerSize: 64 * 1024 });
    b = await h.makeImage({ layers: 2, layerSize: 64 * 1024 });
    await pushImage(a, `${reg.host}/td/a:v1`, 'alice:alicepw');
    await pushImage(b, `${reg.host}/td/b:v1`, 'alice:alicepw');
    fixtures = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    checkDirImage((await h.pullToDir(`127.0.0.1:${rec.port}/td/a:v1`)).dir);
    await rec.close();
  });
  afterAll(() => h.cleanup());

  it('record-missing: serves what is recorded, records a second image, then both replay offline', async () => {
    const dir = h.tempDir('grow');
    fs.cpSync(fixtures, dir, { recursive: true });
    const before = listFiles(dir);
    const grow = await replay({ fixtures: dir, port: 0, recordMissing: { upstream: reg.url } });
    h.onCleanup(() => grow.close());
    checkDirImage((await h.pullToDir(`127.0.0.1:${grow.port}/td/a:v1`)).dir);
    expect(grow.recorded()).toEqual([]); // image a came from the fixtures
    checkDirImage((await h.pullToDir(`127.0.0.1:${grow.port}/td/b:v1`)).dir);
    await grow.close();
    expect(grow.recorded().length).toBeGreaterThanOrEqual(4); // token, manifest, config, layers of b
    const added = listFiles(dir).filter((f) => !before.includes(f));
    expect(added.some((f) => f.startsWith('GET_td_b_manifests_v1.'))).toBe(true);
    for (const d of [...b.layerDigests, b.configDigest]) expect(added).toContain(`bodies/sha256/${d.slice(7)}`);

    // offline: a registry that is gone cannot help any more
    const offline = h.tempDir('offline');
    fs.cpSync(dir, offline, { recursive: true });
    const r2 = await replay({ fixtures: offline, port: 0, strict: true });
    h.onCleanup(() => r2.close().catch(() => undefined));
    const stoppedUpstream = await h.startRegistry({ mode: 'plain' }); // unrelated, just proves nothing reaches reg
    await stoppedUpstream.stop();
    for (const img of [['a', a], ['b', b]] as const) {
      const p = await h.pullToDir(`127.0.0.1:${r2.port}/td/${img[0]}:v1`);
      expect(checkDirImage(p.dir).manifestDigest).toBe(img[1].manifestDigest);
    }
    await r2.close(); // strict, and nothing went unmatched: resolves
  });

  it('strict mode: close() rejects naming the unmatched request; the CLI exits 1', async () => {
    const r = await replay({ fixtures, port: 0, strict: true });
    await request(`${r.url}/v2/td/a/manifests/nope`, { headers: [['authorization', 'Bearer x']] });
    const err = await r.close().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StrictReplayError);
    expect((err as Error).message).toContain('unmatched GET /v2/td/a/manifests/nope');

    const port = await freePort();
    const cli = new CliProcess(['replay', fixtures, '--port', String(port), '--strict']);
    await cli.firstLine();
    await request(`http://127.0.0.1:${port}/v2/td/a/manifests/nope`, { headers: [['authorization', 'Bearer x']] });
    expect(await cli.stop('SIGTERM')).toBe(1);
    expect(cli.stderr).toContain('regtape: strict mode: 1 unmatched request(s)');

    const port2 = await freePort();
    const cli2 = new CliProcess(['replay', fixtures, '--port', String(port2), '--strict=unused']);
    await cli2.firstLine();
    expect(await cli2.stop('SIGTERM')).toBe(1); // nothing was used
    expect(cli2.stderr).toMatch(/regtape: strict mode: \d+ unused fixture\(s\)/);

    const port3 = await freePort();
    const cli3 = new CliProcess(['replay', fixtures, '--port', String(port3)]);
    await cli3.firstLine();
    await request(`http://127.0.0.1:${port3}/v2/td/a/manifests/nope`, { headers: [['authorization', 'Bearer x']] });
    expect(await cli3.stop('SIGTERM')).toBe(0); // not strict: a miss is reported, not fatal
  });

  it('recording the same pull again keeps both as a sequence; --overwrite replaces', async () => {
    const dir = h.tempDir('seq');
    const counts: number[] = [];
    for (const overwrite of [false, false, true]) {
      const rec = await record({ upstream: reg.url, out: dir, port: 0, log: quiet, overwrite });
      h.onCleanup(() => rec.close());
      await h.pullToDir(`127.0.0.1:${rec.port}/td/a:v1`);
      await rec.close();
      counts.push(listFiles(dir).filter((f) => !f.startsWith('bodies/') && f !== '.gitattributes').length);
    }
    // the second recording appended a sequence (x.2.md next to x.md); --overwrite went back to one of each
    expect(counts[1]).toBe(2 * counts[0]);
    expect(counts[2]).toBe(counts[0]);
    expect(listFiles(dir).filter((f) => /\.[0-9a-f]{8}\.\d+\.md$/.test(f))).toEqual([]);
  });

  describe('fault injection', () => {
    it('429 on the first manifest GET: skopeo waits Retry-After and retries; the headers are Docker Hub’s', async () => {
      const r = await replay({ fixtures, port: 0, faults: [{ fault: 'toomanyrequests', method: 'GET', route: 'manifest', nth: 1, retryAfter: 1 }] });
      h.onCleanup(() => r.close());
      const p = await h.pullToDir(`127.0.0.1:${r.port}/td/a:v1`);
      expect(checkDirImage(p.dir).manifestDigest).toBe(a.manifestDigest);
      const r2 = await replay({ fixtures, port: 0, faults: [{ fault: 'toomanyrequests', route: 'manifest' }] });
      h.onCleanup(() => r2.close());
      const direct = await request(`${r2.url}/v2/td/a/manifests/v1`, { headers: [['authorization', 'Bearer x']] });
      expect(direct.status).toBe(429);
      expect(direct.headers['retry-after']).toBe('1');
      expect(direct.headers['ratelimit-remaining']).toBe('0;w=21600');
      expect(JSON.parse(direct.body.toString()).errors[0].code).toBe('TOOMANYREQUESTS');
    });

    it('503 on a path, a blob cut short, an expired token: each seen by skopeo and by HTTP', async () => {
      const unavailable = await replay({ fixtures, port: 0, faults: [{ fault: 'unavailable', path: '^/v2/td/a/manifests/' }] });
      h.onCleanup(() => unavailable.close());
      const s1 = await skopeo(['inspect', '--raw', '--tls-verify=false', `docker://127.0.0.1:${unavailable.port}/td/a:v1`]);
      expect(s1.code).not.toBe(0);
      expect(s1.stderr).toContain('503 Service Unavailable');

      const cut = await replay({ fixtures, port: 0, faults: [{ fault: 'cut', route: 'blob', bytes: 1000 }] });
      h.onCleanup(() => cut.close());
      const s2 = await skopeo(['copy', '--src-tls-verify=false', `docker://127.0.0.1:${cut.port}/td/a:v1`, `dir:${h.tempDir('cut')}`]);
      expect(s2.code).not.toBe(0);
      expect(s2.stderr).toMatch(/unexpected EOF|connection reset/);
      const partial = await request(`${cut.url}/v2/td/a/blobs/${a.layerDigests[0]}`, { headers: [['authorization', 'Bearer x']] }).catch((e: Error) => e);
      // the client sees the promised length and a connection that ends early (errors from node's http
      // come from another realm than jest's: no instanceof)
      expect('message' in partial ? partial.message : `complete: ${partial.status}`).toMatch(/aborted|socket hang up|ECONNRESET/);

      const expiring = await replay({ fixtures, port: 0, faults: [{ fault: 'expire-token', route: 'blob', nth: 1 }] });
      h.onCleanup(() => expiring.close());
      const e1 = await request(`${expiring.url}/v2/td/a/blobs/${a.layerDigests[0]}`, { headers: [['authorization', 'Bearer regtape-replay-token']] });
      expect(e1.status).toBe(401);
      expect(String(e1.headers['www-authenticate'])).toMatch(new RegExp(`^Bearer realm="${expiring.url}/__regtape/token/.*error="invalid_token"$`));
      const e2 = await request(`${expiring.url}/v2/td/a/blobs/${a.layerDigests[0]}`, { headers: [['authorization', 'Bearer regtape-replay-token']] });
      expect(e2.status).toBe(200); // only the first
    });

    it('bad fault flags are one clear line', async () => {
      const { runCli } = await import('../support/cli');
      const r = await runCli(['replay', fixtures, '--fault', 'explode@blob']);
      expect(r.code).toBe(2);
      expect(r.stderr.trim()).toMatch(/^regtape: --fault "explode@blob": expected KIND/);
    });
  });

  it('the library from ESM and CommonJS, against a real skopeo pull', async () => {
    const run = promisify(execFile);
    const script = (kind: 'esm' | 'cjs'): string =>
      `${kind === 'esm' ? `import { replay } from ${JSON.stringify(DIST)};` : `const { replay } = require(${JSON.stringify(DIST)});`}
       (async () => { const r = await replay({ fixtures: ${JSON.stringify(fixtures)}, port: 0 }); console.log(r.port);
         process.stdin.once('data', async () => { console.log(JSON.stringify({ served: r.served(), unmatched: r.unmatched().length })); await r.close(); }); })();`;
    for (const kind of ['esm', 'cjs'] as const) {
      const { spawn } = await import('node:child_process');
      const child = spawn(process.execPath, kind === 'esm' ? ['--input-type=module', '-e', script(kind)] : ['-e', script(kind)], { stdio: ['pipe', 'pipe', 'inherit'] });
      const lines: string[] = [];
      const next = (): Promise<string> => new Promise((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim())));
      const port = Number(await next());
      const p = await h.pullToDir(`127.0.0.1:${port}/td/a:v1`);
      expect(checkDirImage(p.dir).manifestDigest).toBe(a.manifestDigest);
      child.stdin.end('\n');
      lines.push(await next());
      await new Promise((r) => child.on('exit', r));
      expect(JSON.parse(lines[0])).toEqual({ served: expect.any(Number), unmatched: 0 });
    }
    void run;
  });
});
