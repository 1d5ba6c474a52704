// Real registries are not plain: Bearer token auth on another host, Basic auth, blob redirects to a
// CDN. Recorded through regtape, replayed with registry, token server and CDN all stopped; and no
// secret in any file written.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { record, replay, ReplayServer } from '../../src';
import { checkDirImage, dockerManifestInspect, Harness, Image, Registry, RegistryMode, pushImage, skopeo } from '../harness';
import { credentialForms, findSecrets, listFiles } from '../support/secrets';
import { request } from '../support/http';

jest.setTimeout(120_000);
const quiet = (): void => undefined;

interface Scenario {
  mode: RegistryMode;
  /** skopeo pulls: with creds and anonymously where the mode allows it */
  pulls: Array<string | undefined>;
  inspect: { user: string; password: string } | 'anonymous';
}

const scenarios: Scenario[] = [
  { mode: 'token', pulls: ['bob:bobpw', undefined], inspect: 'anonymous' },
  { mode: 'basic', pulls: ['alice:alicepw'], inspect: { user: 'alice', password: 'alicepw' } },
  { mode: 'hub', pulls: ['bob:bobpw', undefined], inspect: 'anonymous' },
  { mode: 'redirect', pulls: [undefined], inspect: 'anonymous' },
];

describe.each(scenarios)('$mode registry: record, stop everything, replay', ({ mode, pulls, inspect }) => {
  const h = new Harness();
  let reg: Registry;
  let image: Image;
  let fixtures: string;
  let replayer: ReplayServer;
  let inspected = '';
  const repo = 'library/alpine';

  const inspectOpts = (host: string): Parameters<typeof dockerManifestInspect>[1] =>
    inspect === 'anonymous' ? {} : { creds: { host, user: inspect.user, password: inspect.password } };

  beforeAll(async () => {
    reg = await h.startRegistry({ mode });
    image = await h.makeImage({ layers: 2, layerSize: 200 * 1024 });
    await pushImage(image, `${reg.host}/${repo}:3.20`, mode === 'plain' || mode === 'redirect' ? undefined : 'alice:alicepw');
    fixtures = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    for (const creds of pulls) {
      const p = await h.pullToDir(`127.0.0.1:${rec.port}/${repo}:3.20`, creds);
      checkDirImage(p.dir);
    }
    const host = `127.0.0.1:${rec.port}`;
    const r = await dockerManifestInspect(`${host}/${repo}:3.20`, inspectOpts(host));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    inspected = r.stdout;
    await rec.close();
    await reg.stop(); // registry, token server and CDN
    replayer = await replay({ fixtures, port: 0 });
    h.onCleanup(() => replayer.close());
  });
  afterAll(() => h.cleanup());

  it('no password, Basic pair or token in any file written', () => {
    expect(findSecrets(fixtures, credentialForms(reg.users))).toEqual([]);
  });

  it.each(pulls.map((c) => [c ?? 'anonymous', c] as const))('skopeo pull (%s) replays byte for byte', async (_label, creds) => {
    const p = await h.pullToDir(`127.0.0.1:${replayer.port}/${repo}:3.20`, creds);
    const { manifestDigest, blobs } = checkDirImage(p.dir);
    expect(manifestDigest).toBe(image.manifestDigest);
    expect(p.manifestBytes.equals(image.manifestBytes)).toBe(true);
    expect(blobs.sort()).toEqual([...image.layerDigests, image.configDigest].sort());
  });

  it('docker manifest inspect replays what it printed live', async () => {
    const host = `127.0.0.1:${replayer.port}`;
    const r = await dockerManifestInspect(`${host}/${repo}:3.20`, inspectOpts(host));
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(inspected);
    expect(replayer.unmatched()).toEqual([]);
  });

  if (mode === 'token' || mode === 'hub') {
    it('the challenge points at the replayer, and the token is fresh and a placeholder', async () => {
      const ping = await request(`${replayer.url}/v2/`);
      expect(ping.status).toBe(401);
      const challenge = String(ping.headers['www-authenticate']);
      const realm = /realm="([^"]+)"/.exec(challenge)![1];
      expect(realm.startsWith(`${replayer.url}/__regtape/token/http/`)).toBe(true);
      expect(challenge).toContain('service="registry.docker.io"');
      const before = Date.now();
      // any credentials, any account, either scope order: matched on service and scopes
      const tok = await request(`${realm}?service=registry.docker.io&scope=repository%3Alibrary%2Falpine%3Apull&account=mallory`, {
        headers: [['authorization', 'Basic ' + Buffer.from('mallory:nope').toString('base64')]],
      });
      expect(tok.status).toBe(200);
      const body = JSON.parse(tok.body.toString()) as { token: string; issued_at: string; expires_in: number };
      expect(body.token).toBe('regtape-replay-token');
      expect(body.expires_in).toBeGreaterThanOrEqual(3600);
      expect(Date.parse(body.issued_at)).toBeGreaterThanOrEqual(before - 1000);
      // the OAuth2 POST form (containerd) for the same scope is answered too
      const post = await request(realm, {
        method: 'POST',
        headers: [['content-type', 'application/x-www-form-urlencoded']],
        body: 'grant_type=password&username=x&password=y&client_id=containerd-client&service=registry.docker.io&scope=repository%3Alibrary%2Falpine%3Apull',
      });
      expect(post.status).toBe(200);
      expect(JSON.parse(post.body.toString()).access_token).toBe('regtape-replay-token');
    });

    it('a derived answer (a manifest by digest, never requested so) still challenges an anonymous client', async () => {
      const url = `${replayer.url}/v2/${repo}/manifests/${image.manifestDigest}`;
      const anon = await request(url, { method: 'HEAD' });
      expect(anon.status).toBe(401);
      expect(String(anon.headers['www-authenticate'])).toContain(`scope="repository:${repo}:pull"`);
      // the registry gives an OCI manifest only to a request that accepts it
      const oci: [string, string] = ['accept', 'application/vnd.oci.image.manifest.v1+json'];
      const authed = await request(url, { method: 'HEAD', headers: [['authorization', 'Bearer regtape-replay-token'], oci] });
      expect(authed.status).toBe(200);
      expect(authed.headers['docker-content-digest']).toBe(image.manifestDigest);
    });
  }

  if (mode === 'hub' || mode === 'redirect') {
    it('blob GETs answer 307 to a stable URL on the replayer, which serves the bytes', async () => {
      const layer = image.layerDigests[0];
      const auth: Array<[string, string]> = mode === 'hub' ? [['authorization', 'Bearer anything']] : [];
      const r = await request(`${replayer.url}/v2/${repo}/blobs/${layer}`, { headers: auth });
      expect(r.status).toBe(307);
      const location = String(r.headers.location);
      expect(location.startsWith(`${replayer.url}/__regtape/redirect/http/`)).toBe(true);
      expect(location).not.toContain('?');
      const blob = await request(location);
      expect(blob.status).toBe(200);
      const crypto = await import('node:crypto');
      expect('sha256:' + crypto.createHash('sha256').update(blob.body).digest('hex')).toBe(layer);
    });
  }
});

describe('token realm through the recorder', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('wrong credentials reach the client as the upstream 401; POST forms are recorded without password', async () => {
    const reg = await h.startRegistry({ mode: 'token' });
    const fixtures = h.tempDir('fixtures');
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: quiet });
    h.onCleanup(() => rec.close());
    const bad = await skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', 'bob:wrong', `docker://127.0.0.1:${rec.port}/library/alpine:1`]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/401|unauthorized|incorrect username or password/i);

    const ping = await request(`${rec.url}/v2/`);
    const realm = /realm="([^"]+)"/.exec(String(ping.headers['www-authenticate']))![1];
    expect(realm).toBe(`${rec.url}/__regtape/token/http/${new URL(reg.tokenUrl!).host}/token`);
    const wrong = await request(`${realm}?service=registry.docker.io&scope=repository%3Alibrary%2Falpine%3Apull&account=bob`, {
      headers: [['authorization', 'Basic ' + Buffer.from('bob:wrong').toString('base64')]],
    });
    expect(wrong.status).toBe(401);
    expect(wrong.body.toString()).toContain('incorrect username or password');
    const post = await request(realm, {
      method: 'POST',
      headers: [['content-type', 'application/x-www-form-urlencoded']],
      body: 'grant_type=password&username=alice&password=alicepw&client_id=containerd-client&service=registry.docker.io&scope=repository%3Alibrary%2Falpine%3Apull',
    });
    expect(post.status).toBe(200);
    const live = JSON.parse(post.body.toString()) as { token: string };
    expect(live.token).toMatch(/^eyJ/); // the client gets the real token...
    await rec.close();
    // ...the fixtures never do
    expect(findSecrets(fixtures, [...credentialForms(reg.users), 'wrong', live.token.slice(0, 40)])).toEqual([]);
    const postFixture = listFiles(fixtures).find((f) => f.startsWith('POST_'))!;
    const text = fs.readFileSync(path.join(fixtures, postFixture), 'utf8');
    expect(text).toContain('password=%3Credacted%3E');
    expect(text).toContain('username=%3Credacted%3E');
    expect(text).toContain('"token":"<redacted>"');
  });
});
