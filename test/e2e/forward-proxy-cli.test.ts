// The forward proxy's flags and refusals: what a user gets wrong is said in one line, and a recorder
// limited by --allow-host refuses CONNECT to any other host before anything leaves the machine.
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { Harness, pushImage, run } from '../harness';
import { replayForward } from '../../src/proxy/replay';
import { runCli } from '../support/cli';
import { loadOrCreateCA } from '../../src/proxy/ca';
import { recordForward } from '../../src/proxy/record';

/** Sends `CONNECT authority` and returns the proxy's status line and body. */
function connect(port: number, authority: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
    let got = '';
    s.on('data', (c) => {
      got += c.toString();
      // A refusal is answered and closed by the proxy; an established tunnel waits for the client.
      if (got.startsWith('HTTP/1.1 200') && got.includes('\r\n\r\n')) s.destroy();
    });
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}

describe('record --proxy / replay --proxy: flags', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('refuses flags that make no sense together, each with a reason', async () => {
    const out = h.tempDir('out');
    const both = await runCli(['record', '--proxy', '--upstream', 'http://127.0.0.1:5000', '--out', out]);
    expect(both.code).toBe(2);
    expect(both.stderr.trim()).toBe('regtape: --proxy records every host the client reaches; --upstream is for the reverse proxy: use one or the other');
    const open = await runCli(['record', '--proxy', '--host', '0.0.0.0', '--port', '0', '--out', out]);
    expect(open.code).toBe(2);
    expect(open.stderr).toContain('name the hosts it may reach with --allow-host');
    const tls = await runCli(['record', '--proxy', '--tls', '--port', '0', '--out', out]);
    expect(tls.code).toBe(2);
    expect(tls.stderr).toContain("the forward proxy's port speaks plain HTTP");
    const drain = await runCli(['record', '--proxy', '--drain-timeout', '5', '--port', '0', '--out', out]);
    expect(drain.code).toBe(2);
    expect(drain.stderr.trim()).toBe('regtape: --drain-timeout does nothing with --proxy (not supported in the forward proxy yet)');
    const missing = await runCli(['replay', out, '--proxy', '--record-missing', '--upstream', 'http://127.0.0.1:5000']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--proxy replays offline');
  });

  it('replay --proxy refuses a folder that is not one folder per host', async () => {
    const dir = h.tempDir('flat');
    // A reverse-proxy recording: fixtures directly in the folder.
    const example = path.join(__dirname, '../../examples/hello-pull');
    fs.copyFileSync(path.join(example, fs.readdirSync(example).find((f) => f.startsWith('GET_v2.'))!), path.join(dir, 'GET_v2.md'));
    const r = await runCli(['replay', dir, '--proxy', '--port', '0']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('with --proxy, fixtures live in one folder per host');
  });

  it('--allow-host: CONNECT to another host is refused before any connection is made', async () => {
    const ca = await loadOrCreateCA(h.tempDir('ca'));
    const rec = await recordForward({ out: h.tempDir('fx'), port: 0, ca, allowHosts: ['ghcr.io', '*.docker.io'] });
    h.onCleanup(() => rec.close());
    const refused = await connect(rec.port, 'quay.io:443');
    expect(refused).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(refused).toContain('quay.io:443 is not among the hosts this recorder may reach (--allow-host ghcr.io *.docker.io)');
    expect(await connect(rec.port, 'auth.docker.io:443')).toMatch(/^HTTP\/1\.1 200 /);
    await rec.close();
    expect(rec.hosts()).toEqual([]);
  });

  it('plain http:// through the proxy is recorded under host:port and replayed with the registry stopped', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 1, layerSize: 64 * 1024 });
    await pushImage(image, `${reg.host}/plain/img:v1`);
    const ca = await loadOrCreateCA(h.tempDir('ca'));
    const out = h.tempDir('fx');
    const manifestUrl = `http://${reg.host}/v2/plain/img/manifests/v1`;
    const curl = (port: number): Promise<Buffer> =>
      run('curl', ['-sSf', '-x', `http://127.0.0.1:${port}`, '-H', 'Accept: application/vnd.oci.image.manifest.v1+json', manifestUrl], { timeoutMs: 30_000, env: { PATH: process.env.PATH } }).then((r) => {
        if (r.code !== 0) throw new Error(`curl failed: ${r.stderr}`);
        return r.stdoutBuffer;
      });
    const rec = await recordForward({ out, port: 0, ca });
    h.onCleanup(() => rec.close());
    expect((await curl(rec.port)).equals(image.manifestBytes)).toBe(true);
    await rec.close();
    expect(fs.readdirSync(out).sort()).toEqual([reg.host, 'bodies'].sort());
    await reg.stop();
    const rep = await replayForward({ fixtures: out, port: 0, ca, strict: true });
    h.onCleanup(() => rep.close().catch(() => undefined));
    expect((await curl(rep.port)).equals(image.manifestBytes)).toBe(true);
    await rep.close();
  });
});
