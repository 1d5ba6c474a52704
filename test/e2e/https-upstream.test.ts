// An https upstream, verified as usual: the recorder trusts what node trusts (plus NODE_EXTRA_CA_CERTS),
// sends the upstream's own Host/SNI, and the pull replays offline.
import { freePort, Harness, pushImage, checkDirImage } from '../harness';
import { CliProcess, runCli } from '../support/cli';
import { replay } from '../../src';

jest.setTimeout(120_000);

describe('recording from an https registry', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('records through TLS with the CA trusted, refuses clearly without it, replays offline', async () => {
    const reg = await h.startRegistry({ mode: 'plain', tls: true });
    expect(reg.url.startsWith('https://127.0.0.1:')).toBe(true);
    const image = await h.makeImage({ layers: 2, layerSize: 128 * 1024 });
    await pushImage(image, `${reg.host}/secure/img:v1`);
    const out = h.tempDir('fixtures');

    const untrusted = await runCli(['record', '--upstream', reg.url, '--port', '0', '--out', out]);
    expect(untrusted.code).toBe(2);
    expect(untrusted.stderr.trim()).toMatch(/^regtape: upstream https:\/\/127\.0\.0\.1:\d+: its TLS certificate is not trusted \(\w+\): for a private CA, start regtape with NODE_EXTRA_CA_CERTS/);

    const port = await freePort();
    const rec = new CliProcess(['record', '--upstream', reg.url, '--port', String(port), '--out', out], undefined, { NODE_EXTRA_CA_CERTS: reg.caCert! });
    h.onCleanup(() => void rec.stop('SIGKILL'));
    await rec.firstLine();
    const live = await h.pullToDir(`127.0.0.1:${port}/secure/img:v1`);
    checkDirImage(live.dir);
    expect(await rec.stop('SIGINT')).toBe(0);
    await reg.stop();

    const r = await replay({ fixtures: out, port: 0, strict: true });
    h.onCleanup(() => r.close().catch(() => undefined));
    const again = await h.pullToDir(`127.0.0.1:${r.port}/secure/img:v1`);
    expect(checkDirImage(again.dir).manifestDigest).toBe(image.manifestDigest);
    expect(again.manifestBytes.equals(image.manifestBytes)).toBe(true);
    await r.close();
  });
});
