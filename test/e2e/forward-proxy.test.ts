// The forward proxy: clients keep their image names (ghcr.io/..., quay.io/..., docker.io/...) and only
// set HTTPS_PROXY and trust regtape's CA. Local TLS registries stand in for the public ones, with
// certificates for their real names from a throw-away CA; the recorder reaches them by --resolve and
// trusts that CA by --upstream-ca. The Docker-Hub-like pair has its token realm on auth.docker.io and
// redirects blobs to a CDN host. Everything is recorded, every registry is stopped, and replay --proxy
// answers the same pulls and the push offline: listeners on the stopped registries' ports see no connection.
import * as fs from 'fs';
import * as path from 'path';
import { filesUnder } from '../support/reliability';
import {
  checkDirImage,
  createPodman,
  dockerManifestInspect,
  startContainerd,
  startDockerd,
  connectionCounter,
  describeFailure,
  Harness,
  Image,
  makeTestCA,
  pushImage,
  Registry,
  run,
  RunResult,
  skopeo,
  TestCA,
  tlsFront,
  TlsFront,
} from '../harness';
import { CliProcess } from '../support/cli';
import { freePort } from '../harness';

jest.setTimeout(300_000);
const limit = { timeoutMs: 60_000 };

function ok(r: RunResult, what: string): RunResult {
  if (r.code !== 0) throw new Error(`${what} failed: ${describeFailure(r)}`);
  return r;
}

/** The environment of a client that goes through the proxy and trusts only regtape's CA. */
function proxyEnv(proxyUrl: string, caCert: string): NodeJS.ProcessEnv {
  return { HTTPS_PROXY: proxyUrl, https_proxy: proxyUrl, HTTP_PROXY: proxyUrl, http_proxy: proxyUrl, NO_PROXY: '', no_proxy: '', SSL_CERT_FILE: caCert, SSL_CERT_DIR: '/nonexistent' };
}


describe('record --proxy and replay --proxy: several registries by their real names', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  let testCa: TestCA;
  let ghcr: Registry;
  let quay: Registry;
  let hub: Registry;
  let fronts: TlsFront[];
  let resolve: string[];
  let ghcrImage: Image;
  let quayImage: Image;
  let hubImage: Image;
  let pushed: Image;
  const caDir = (): string => path.join(root, 'regtape-ca');
  const caCert = (): string => path.join(caDir(), 'ca.pem');
  let root: string;
  /** Every port something listened on before replay: none may be reached while replaying. */
  let upstreamPorts: number[];

  beforeAll(async () => {
    root = h.tempDir('fwd');
    testCa = await makeTestCA(root);
    const [ghcrCert, quayCert, hubCert, authCert, cdnCert] = await Promise.all(
      ['ghcr.io', 'quay.io', 'registry-1.docker.io', 'auth.docker.io', 'production.cloudflare.docker.com'].map((n) => testCa.issue(n)),
    );
    [ghcr, quay, hub] = await Promise.all([
      h.startRegistry({ mode: 'plain', tls: ghcrCert }),
      h.startRegistry({ mode: 'basic', tls: quayCert }),
      h.startRegistry({ mode: 'hub', tls: hubCert, realm: 'https://auth.docker.io/token', cdnBaseUrl: 'https://production.cloudflare.docker.com' }),
    ]);
    const auth = await tlsFront(authCert, hub.tokenServer!.port);
    const cdn = await tlsFront(cdnCert, hub.cdn!.port);
    fronts = [auth, cdn];
    h.onCleanup(() => Promise.all(fronts.map((f) => f.close())).then(() => undefined));
    resolve = [`ghcr.io=127.0.0.1:${ghcr.port}`, `quay.io=127.0.0.1:${quay.port}`, `registry-1.docker.io=127.0.0.1:${hub.port}`, `auth.docker.io=127.0.0.1:${auth.port}`, `production.cloudflare.docker.com=127.0.0.1:${cdn.port}`];
    upstreamPorts = [ghcr.port, quay.port, hub.port, auth.port, cdn.port];
    [ghcrImage, quayImage, hubImage, pushed] = await Promise.all([
      h.makeImage({ layers: 2, layerSize: 200 * 1024, tag: 'v1' }),
      h.makeImage({ layers: 1, layerSize: 100 * 1024, tag: 'v2' }),
      h.makeImage({ layers: 2, layerSize: 150 * 1024, tag: '3.20' }),
      h.makeImage({ layers: 1, layerSize: 80 * 1024, tag: 'v1' }),
    ]);
    // Seeded directly (127.0.0.1, verification off): the token realm of the hub-like registry is a name
    // only the proxy resolves, so that one is seeded through the recorder below, as a recorded push.
    await pushImage(ghcrImage, `${ghcr.host}/org/app:v1`);
    await pushImage(quayImage, `${quay.host}/team/tool:v2`, 'alice:alicepw');
  });

  /** A recorder (`record --proxy`) into fixtures/<name> while `fn` runs clients through it; stopped with SIGINT after. */
  async function recording(name: string, fn: (env: NodeJS.ProcessEnv) => Promise<void>): Promise<string> {
    const out = path.join(root, 'fixtures', name);
    const recPort = await freePort();
    const rec = new CliProcess(
      ['record', '--proxy', '--port', String(recPort), '--out', out, '--upstream-ca', testCa.certPath, ...resolve.flatMap((r) => ['--resolve', r])],
      undefined,
      { REGTAPE_CA_DIR: caDir() },
    );
    h.onCleanup(() => void rec.stop('SIGKILL'));
    const line = await rec.firstLine();
    expect(line).toContain(`http://127.0.0.1:${recPort}`);
    expect(line).toContain(caCert());
    try {
      await fn(proxyEnv(`http://127.0.0.1:${recPort}`, caCert()));
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- recorder ---\n${rec.stderr}`);
    }
    expect(await rec.stop('SIGINT')).toBe(0);
    return out;
  }

  /** `replay DIR --proxy` while `fn` runs clients through it; its summary must show no unmatched request. */
  async function replaying(out: string, fn: (env: NodeJS.ProcessEnv, port: number) => Promise<void>, expectUnmatched = false): Promise<void> {
    const repPort = await freePort();
    // The CA by flag here, by REGTAPE_CA_DIR for the recorder: the same CA either way.
    const rep = new CliProcess(['replay', out, '--proxy', '--port', String(repPort), '--ca-dir', caDir()]);
    h.onCleanup(() => void rep.stop('SIGKILL'));
    expect(await rep.firstLine()).toContain(`http://127.0.0.1:${repPort}`);
    try {
      await fn(proxyEnv(`http://127.0.0.1:${repPort}`, caCert()), repPort);
      if (!expectUnmatched) {
        const summary = (await (await fetch(`http://127.0.0.1:${repPort}/__regtape/summary`)).json()) as { unmatchedTotal: number };
        expect(summary.unmatchedTotal).toBe(0);
      }
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- replay ---\n${rep.stderr}`);
    }
    expect(await rep.stop('SIGINT')).toBe(0);
  }

  const recorded = new Map<string, string>();
  const pulls = (): Array<[string, Image, string?]> => [
    ['ghcr.io/org/app:v1', ghcrImage],
    ['quay.io/team/tool:v2', quayImage, 'alice:alicepw'],
    ['docker.io/library/alpine:3.20', hubImage],
  ];

  async function skopeoPulls(env: NodeJS.ProcessEnv): Promise<void> {
    for (const [ref, image, creds] of pulls()) {
      const dir = h.tempDir('pull');
      ok(await skopeo(['copy', ...(creds ? ['--src-creds', creds] : []), `docker://${ref}`, `dir:${dir}`], { ...limit, env }), `skopeo pull ${ref}`);
      const got = checkDirImage(dir);
      expect(got.manifestDigest).toBe(image.manifestDigest);
      expect(got.blobs).toEqual([image.configDigest, ...image.layerDigests]);
    }
  }

  async function podmanRun(env: NodeJS.ProcessEnv): Promise<void> {
    const p = createPodman({ tmp: h.tmp });
    try {
      for (const [ref, image, creds] of pulls()) {
        ok(await p.pull(ref, { ...limit, env, tlsVerify: true, creds }), `podman pull ${ref}`);
        await p.checkImage(ref, image);
      }
      ok(await p.push('ghcr.io/org/app:v1', 'quay.io/team/from-podman:v1', { ...limit, env, tlsVerify: true, creds: 'alice:alicepw' }), 'podman push to quay.io');
    } finally {
      await p.remove();
    }
  }

  async function ctrRun(env: NodeJS.ProcessEnv): Promise<void> {
    const c = await startContainerd({ tmp: h.tmp });
    try {
      for (const [ref, image, creds] of pulls()) {
        ok(await c.pull(ref, { ...limit, env, plainHttp: false, user: creds }), `ctr pull ${ref}`);
        await c.checkImage(ref, image);
      }
    } finally {
      await c.stop();
    }
  }

  async function dockerdRun(env: NodeJS.ProcessEnv): Promise<void> {
    const d = await startDockerd({ tmp: h.tmp, env });
    try {
      for (const [ref, image] of pulls().filter(([, , creds]) => !creds)) {
        ok(await d.docker(['pull', ref], limit), `docker pull ${ref}`);
        const inspect = JSON.parse(ok(await d.docker(['image', 'inspect', ref], limit), 'docker image inspect').stdout) as Array<{ Id: string; RepoDigests: string[]; RootFS: { Layers: string[] } }>;
        expect(inspect[0].Id).toBe(image.configDigest);
        expect(inspect[0].RepoDigests.map((r) => r.split('@')[1])).toContain(image.manifestDigest);
        expect(inspect[0].RootFS.Layers).toEqual(image.diffIds);
      }
    } finally {
      await d.stop();
    }
  }

  async function dockerCliRun(env: NodeJS.ProcessEnv): Promise<void> {
    for (const [ref, image] of pulls().filter(([, , creds]) => !creds)) {
      const r = ok(await dockerManifestInspect(ref, { ...limit, env, insecure: false }), `docker manifest inspect ${ref}`);
      const m = JSON.parse(r.stdout) as { config: { digest: string }; layers: Array<{ digest: string }> };
      expect([m.config.digest, ...m.layers.map((l) => l.digest)]).toEqual([image.configDigest, ...image.layerDigests]);
    }
  }

  it('skopeo records pulls from three registries and pushes to two, through one proxy', async () => {
    const out = await recording('skopeo', async (env) => {
      // Hub-like: push with credentials (token realm on auth.docker.io), then pull it back with the others.
      ok(await skopeo(['copy', '--dest-creds', 'alice:alicepw', hubImage.ref, 'docker://docker.io/library/alpine:3.20'], { ...limit, env }), 'skopeo push to docker.io');
      ok(await skopeo(['copy', '--dest-creds', 'alice:alicepw', pushed.ref, 'docker://quay.io/team/pushed:v1'], { ...limit, env }), 'skopeo push to quay.io');
      await skopeoPulls(env);
    });
    recorded.set('skopeo', out);

    // One folder per host, one shared body store.
    expect(fs.readdirSync(out).sort()).toEqual(['auth.docker.io', 'bodies', 'ghcr.io', 'production.cloudflare.docker.com', 'quay.io', 'registry-1.docker.io']);
    expect(fs.readdirSync(path.join(out, 'production.cloudflare.docker.com')).some((f) => f.startsWith('GET_docker_registry_v2_blobs'))).toBe(true);
    expect(fs.readdirSync(path.join(out, 'auth.docker.io')).some((f) => f.startsWith('GET_token'))).toBe(true);
    // The challenge is recorded as the host said it: the realm is auth.docker.io's, not regtape's.
    const ping = fs.readdirSync(path.join(out, 'registry-1.docker.io')).find((f) => f.startsWith('GET_v2.'))!;
    expect(fs.readFileSync(path.join(out, 'registry-1.docker.io', ping), 'utf8')).toContain('realm="https://auth.docker.io/token"');
    // No secret on disk: passwords, Basic credentials, tokens (JWTs), regtape's CA key.
    const keyBody = fs.readFileSync(path.join(caDir(), 'ca.key'), 'utf8').replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    for (const f of filesUnder(out).filter((f) => !f.includes(`${path.sep}bodies${path.sep}`))) {
      const text = fs.readFileSync(f, 'utf8');
      expect(text).not.toContain('alicepw');
      expect(text).not.toContain(Buffer.from('alice:alicepw').toString('base64'));
      expect(text).not.toMatch(/eyJ[A-Za-z0-9_-]{8,}\.eyJ/);
      expect(text.replace(/\s+/g, '')).not.toContain(keyBody.slice(0, 40));
    }
    expect((fs.statSync(path.join(caDir(), 'ca.key')).mode & 0o777).toString(8)).toBe('600');
  });

  it('podman records pulls and a push', async () => {
    recorded.set('podman', await recording('podman', podmanRun));
  });

  it('ctr records pulls', async () => {
    recorded.set('ctr', await recording('ctr', ctrRun));
  });

  it('the docker daemon (proxy and CA in its environment) and the docker CLI record pulls', async () => {
    recorded.set('dockerd', await recording('dockerd', dockerdRun));
    recorded.set('docker-cli', await recording('docker-cli', dockerCliRun));
  });

  describe('offline', () => {
    let counters: Array<{ connections: number; close(): Promise<void> }> = [];
    beforeAll(async () => {
      // Every registry, token server and CDN stopped; a listener on each of their ports counts visitors.
      await Promise.all([ghcr.stop(), quay.stop(), hub.stop(), ...fronts.map((f) => f.close())]);
      counters = await Promise.all(upstreamPorts.map((p) => connectionCounter(p)));
      h.onCleanup(() => Promise.all(counters.map((c) => c.close())).then(() => undefined));
    });
    afterAll(() => {
      // replay --proxy never opened a connection to any of them
      expect(counters.map((c) => c.connections)).toEqual(upstreamPorts.map(() => 0));
    });

    it('skopeo pulls and pushes again from replay --proxy', async () => {
      await replaying(recorded.get('skopeo')!, async (env) => {
        await skopeoPulls(env);
        ok(await skopeo(['copy', '--dest-creds', 'alice:alicepw', pushed.ref, 'docker://quay.io/team/pushed:v1'], { ...limit, env }), 'skopeo push to quay.io, replayed');
      });
    });

    it('curl -x with --cacert gets the recorded manifest bytes through replay --proxy', async () => {
      await replaying(recorded.get('skopeo')!, async (_env, port) => {
        const r = ok(
          await run('curl', ['-sSf', '-x', `http://127.0.0.1:${port}`, '--cacert', caCert(), '-H', 'Accept: application/vnd.oci.image.manifest.v1+json', 'https://ghcr.io/v2/org/app/manifests/v1'], { ...limit, env: { PATH: process.env.PATH } }),
          'curl through replay --proxy',
        );
        expect(r.stdoutBuffer.equals(ghcrImage.manifestBytes)).toBe(true);
      });
    });

    it('a host with no fixtures gets a registry error naming it, counted as unmatched', async () => {
      await replaying(
        recorded.get('skopeo')!,
        async (env, port) => {
          const miss = await skopeo(['inspect', '--raw', 'docker://registry.example.org/x/y:1'], { ...limit, env });
          expect(miss.code).not.toBe(0);
          expect(miss.stderr).toContain('registry.example.org');
          const summary = (await (await fetch(`http://127.0.0.1:${port}/__regtape/summary`)).json()) as { unmatchedTotal: number; unmatched: Array<{ request: string }> };
          expect(summary.unmatchedTotal).toBeGreaterThan(0);
          expect(summary.unmatched.every((m) => /^[A-Z]+ registry\.example\.org\//.test(m.request))).toBe(true);
        },
        true,
      );
    });

    it('podman pulls and pushes again', async () => {
      await replaying(recorded.get('podman')!, podmanRun);
    });

    it('ctr pulls again', async () => {
      await replaying(recorded.get('ctr')!, ctrRun);
    });

    it('the docker daemon and the docker CLI pull again', async () => {
      await replaying(recorded.get('dockerd')!, dockerdRun);
      await replaying(recorded.get('docker-cli')!, dockerCliRun);
    });
  });
});
