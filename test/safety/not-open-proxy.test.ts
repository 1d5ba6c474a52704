// Item: the recorder is not an open proxy, and neither server answers a foreign Host. Token and
// redirect URLs reach only the upstream and what it named (a real Hub-like registry: token server and
// CDN), plus --allow-host; a Host header from DNS rebinding is refused in record and replay; an
// absolute-form request (curl -x) is refused and never written.
import * as fs from 'node:fs';
import { loadFixtures } from '../../src/fixture/files';
import { checkDirImage, Harness, Image, pushImage, Registry } from '../harness';
import { CliProcess } from '../support/cli';
import { FakeUpstream, json } from '../support/fake-upstream';
import { get, raw, statusOf } from '../support/reliability';

jest.setTimeout(180_000);

const listening = async (cli: CliProcess): Promise<string> => /on (https?:\/\/\S+)/.exec(await cli.firstLine())![1];
const reported = (stderr: string): string[] => [...stderr.matchAll(/ -> (\S+?)(?: x\d+)?$/gm)].map((m) => m[1]);

describe('record and replay reach only the upstream and what it named', () => {
  const h = new Harness();
  let reg: Registry;
  let image: Image;
  let victim: FakeUpstream;
  let out: string;
  let rec: CliProcess;
  let recUrl = '';

  beforeAll(async () => {
    reg = await h.startRegistry({ mode: 'hub' });
    image = await h.makeImage({ layers: 1, layerSize: 64 * 1024 });
    await pushImage(image, `${reg.host}/test/closed:v1`, 'alice:alicepw');
    // A server on loopback that nobody named: what an attacker would aim the recorder at.
    victim = await FakeUpstream.start();
    victim.on('GET', '/secret', (_req, res) => json(res, 200, '{"internal":"data"}'));
    out = h.tempDir('fixtures');
    rec = new CliProcess(['record', '--upstream', reg.url, '--port', '0', '--out', out]);
    h.onCleanup(() => rec.stop('SIGKILL').then(() => undefined));
    recUrl = await listening(rec);
  });
  afterAll(async () => {
    await victim?.close();
    await h.cleanup();
  });

  it('a real pull through the recorder still reaches the realm and the CDN the registry named', async () => {
    const p = await h.pullToDir(`${new URL(recUrl).host}/test/closed:v1`, 'bob:bobpw');
    expect(checkDirImage(p.dir).manifestDigest).toBe(image.manifestDigest);
    expect(reg.cdn!.requests.length).toBeGreaterThan(0);
  });

  it.each([
    ['GET', '/__regtape/token/http/HOST/secret?scope=x'],
    ['POST', '/__regtape/token/http/HOST/secret'],
    ['DELETE', '/__regtape/redirect/http/HOST/secret'],
    ['GET', '/__regtape/redirect/http/HOST/secret'],
  ])('%s %s to a host nobody named: a registry error naming the host, nothing sent, nothing written', async (method, pathTemplate) => {
    const before = victim.requests.length;
    const r = await get(recUrl + pathTemplate.replace('HOST', `127.0.0.1:${victim.port}`), { method, body: method === 'POST' ? 'grant_type=password&username=a&password=b' : undefined });
    expect(r.status).toBe(403);
    const err = JSON.parse(r.body.toString()).errors[0];
    expect(err.code).toBe('DENIED');
    expect(err.message).toContain(`will not forward to 127.0.0.1:${victim.port}`);
    expect(err.message).toContain(`--allow-host 127.0.0.1:${victim.port}`);
    expect(victim.requests.length).toBe(before);
  });

  it('a Host header naming another server (DNS rebinding) is refused; loopback names and the address are not', async () => {
    const port = new URL(recUrl).port;
    const evil = await raw(Number(port), `GET /v2/ HTTP/1.1\r\nHost: attacker.example:${port}\r\nConnection: close\r\n\r\n`);
    expect(statusOf(evil.text)).toBe(403);
    expect(evil.text).toContain('refused a request for Host \\"attacker.example:' + port);
    expect(evil.text).toContain('--allow-host attacker.example');
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) {
      const ok = await raw(Number(port), `GET /v2/ HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      expect(statusOf(ok.text)).toBe(401); // the registry's own challenge, forwarded
    }
  });

  it('an absolute-form request (curl -x) is refused clearly and never written; the folder still loads', async () => {
    const port = Number(new URL(recUrl).port);
    const r = await raw(port, `GET http://example.invalid/v2/ HTTP/1.1\r\nHost: example.invalid\r\nConnection: close\r\n\r\n`);
    expect(statusOf(r.text)).toBe(400);
    expect(r.text).toContain('regtape is the registry itself');
    expect(await rec.stop('SIGTERM')).toBe(0);
    const files = [...new Set(reported(rec.stderr))];
    const loaded = await loadFixtures([out]);
    expect(loaded.files.length).toBe(files.length);
    expect(loaded.exchanges.some((ex) => /example\.invalid|127\.0\.0\.1:\d+\/secret/.test(ex.request.url))).toBe(false);
    expect(fs.readdirSync(out).some((f) => /secret/.test(f))).toBe(false);
  });

  it('--allow-host lets the recorder reach a host the upstream never named, and accept a Host name', async () => {
    const dir = h.tempDir('allowed');
    const cli = new CliProcess(['record', '--upstream', reg.url, '--port', '0', '--out', dir, '--allow-host', `127.0.0.1:${victim.port}`, '--allow-host', '*.example']);
    h.onCleanup(() => cli.stop('SIGKILL').then(() => undefined));
    const url = await listening(cli);
    const before = victim.count('GET', '/secret');
    const r = await get(`${url}/__regtape/redirect/http/127.0.0.1:${victim.port}/secret`);
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('{"internal":"data"}');
    expect(victim.count('GET', '/secret')).toBe(before + 1);
    const port = Number(new URL(url).port);
    const named = await raw(port, `GET /v2/ HTTP/1.1\r\nHost: regtape.example:${port}\r\nConnection: close\r\n\r\n`);
    expect(statusOf(named.text)).toBe(401);
    expect(await cli.stop('SIGTERM')).toBe(0);
  });

  it('replay refuses a foreign Host and absolute-form too; with --record-missing it forwards to no unnamed host', async () => {
    await reg.stop();
    const cli = new CliProcess(['replay', out, '--port', '0']);
    h.onCleanup(() => cli.stop('SIGKILL').then(() => undefined));
    const port = Number(new URL(await listening(cli)).port);
    expect(statusOf((await raw(port, `GET /v2/ HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n`)).text)).toBe(403);
    expect(statusOf((await raw(port, `GET http://example.invalid/v2/ HTTP/1.1\r\nHost: example.invalid\r\nConnection: close\r\n\r\n`)).text)).toBe(400);
    const pulled = await h.pullToDir(`127.0.0.1:${port}/test/closed:v1`, 'bob:bobpw');
    expect(checkDirImage(pulled.dir).manifestDigest).toBe(image.manifestDigest);
    expect(await cli.stop('SIGTERM')).toBe(0);

    // --record-missing against a live upstream (the victim stands in as a registry answering /v2/ without auth).
    const rm = new CliProcess(['replay', out, '--port', '0', '--record-missing', '--upstream', victim.url, '--out', h.tempDir('rm')]);
    h.onCleanup(() => rm.stop('SIGKILL').then(() => undefined));
    const rmUrl = await listening(rm);
    const other = await FakeUpstream.start();
    try {
      const r = await get(`${rmUrl}/__regtape/token/http/127.0.0.1:${other.port}/token?scope=repository%3Anew%3Apull`);
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body.toString()).errors[0].message).toContain(`will not forward to 127.0.0.1:${other.port}`);
      expect(other.requests).toEqual([]);
    } finally {
      await other.close();
    }
    expect(await rm.stop('SIGTERM')).toBe(0);
  });
});
