// A seed-style capture (issue 9, item 5): the challenge names the real realm
// (https://auth.docker.io/token) and no token exchange was captured, as in
// fixtures/seed/000_8e17b29b7c377181.txt. Replay points the realm at its own token endpoint and hands
// out its placeholder token there, so a real client pulls with no network.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { record, replay } from '../../src';
import { checkDirImage, describeFailure, Harness, startDockerd } from '../harness';
import { request } from '../support/http';

jest.setTimeout(180_000);
const quiet = (): void => undefined;

describe('a capture whose realm is on the network, with no token exchange', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('skopeo and the docker daemon pull it offline: challenge pointed at the replayer, placeholder token, bytes as recorded', async () => {
    const reg = await h.startRegistry({ mode: 'token' });
    const image = await h.makeImage({ layers: 2, layerSize: 64 * 1024 });
    const { pushImage } = await import('../harness');
    await pushImage(image, `${reg.host}/library/seedy:v1`, 'alice:alicepw');
    const fixtures = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    await h.pullToDir(`127.0.0.1:${rec.port}/library/seedy:v1`, 'alice:alicepw');
    await rec.close();
    await reg.stop();

    // make it look hand-captured: the real realm, no token exchanges
    let removed = 0;
    let rewritten = 0;
    for (const f of fs.readdirSync(fixtures)) {
      const p = path.join(fixtures, f);
      if (!f.endsWith('.md')) continue;
      const text = fs.readFileSync(p, 'utf8');
      if (/^url \/__regtape\/token\//m.test(text)) {
        fs.rmSync(p);
        removed++;
        continue;
      }
      const seedy = text.replace(/http:\/\/regtape\.invalid\/__regtape\/token\/[^"',]*/g, 'https://auth.docker.io/token');
      if (seedy !== text) rewritten++;
      fs.writeFileSync(p, seedy);
    }
    expect(removed).toBeGreaterThan(0);
    expect(rewritten).toBeGreaterThan(0);

    const replayer = await replay({ fixtures, port: 0, strict: true });
    h.onCleanup(() => replayer.close().catch(() => undefined));
    const ping = await request(`${replayer.url}/v2/`);
    expect(ping.status).toBe(401);
    expect(ping.headers['www-authenticate']).toBe(`Bearer realm="${replayer.url}/__regtape/token/https/auth.docker.io/token",service="registry.docker.io"`);

    const pulled = await h.pullToDir(`127.0.0.1:${replayer.port}/library/seedy:v1`);
    expect(checkDirImage(pulled.dir).manifestDigest).toBe(image.manifestDigest);
    const tokens = replayer.requests().filter((r) => r.url.startsWith('/__regtape/token/'));
    expect(tokens.length).toBeGreaterThan(0);
    expect(tokens.every((r) => r.status === 200 && r.outcome === 'derived')).toBe(true);
    expect(replayer.unmatched()).toEqual([]);

    // the docker daemon too: it follows the challenge to the replayer, never to auth.docker.io
    const tokensBefore = replayer.requests().filter((r) => r.url.startsWith('/__regtape/token/')).length;
    const d = await startDockerd({ tmp: h.tmp });
    h.onCleanup(() => d.stop());
    const ref = `127.0.0.1:${replayer.port}/library/seedy:v1`;
    const pull = await d.docker(['pull', ref]);
    if (pull.code !== 0) throw new Error(`docker pull ${ref}: ${describeFailure(pull)}\n${JSON.stringify(replayer.unmatched(), null, 1)}`);
    const inspect = await d.docker(['image', 'inspect', '--format', '{{json .RepoDigests}}', ref]);
    expect(JSON.parse(inspect.stdout)).toContain(`127.0.0.1:${replayer.port}/library/seedy@${image.manifestDigest}`);
    expect(replayer.requests().filter((r) => r.url.startsWith('/__regtape/token/https/auth.docker.io/token')).length).toBeGreaterThan(tokensBefore);
    await replayer.close(); // strict: nothing unmatched
  });
});
