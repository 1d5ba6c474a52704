// regtape over TLS, with TLS verification ON in every client:
//  - `regtape ca`: one CA per folder, created once (also by two processes at once), key 0600;
//  - `record --tls --upstream https://ghcr.io --resolve ghcr.io=127.0.0.1:PORT --upstream-ca test-ca.pem`
//    records a Hub-like registry (token realm, CDN redirects) whose certificate is for ghcr.io only,
//    issued by a throw-away CA: skopeo, podman, the docker CLI (SSL_CERT_FILE) and ctr (hosts.toml `ca`)
//    pull through it;
//  - the registry is stopped; `replay --tls` serves the same pulls to fresh clients, bytes checked against
//    digests; a client that does not trust regtape's CA is refused; plain HTTP to the TLS port gets a 400
//    that says what to do; the CA key is in no fixture and no log;
//  - `replay --tls --record-missing` with --resolve and --upstream-ca records from https://quay.io (local).
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as http from 'node:http';
import * as path from 'node:path';
import { filesUnder } from '../support/reliability';
import { X509Certificate } from 'node:crypto';
import { checkDirImage, createPodman, describeFailure, dockerManifestInspect, freePort, Harness, Image, pushImage, Registry, run, RunResult, skopeo, startContainerd } from '../harness';
import { replay } from '../../src';
import { CliProcess, runCli } from '../support/cli';

jest.setTimeout(300_000);
const limit = { timeoutMs: 60_000 };
const CREDS = 'alice:alicepw';

function ok(r: RunResult, what: string): RunResult {
  if (r.code !== 0) throw new Error(`${what} failed: ${describeFailure(r)}`);
  return r;
}


/** The base64 body of a PEM key, as one string (what would show up if it leaked anywhere). */
function keyMaterial(pemFile: string): string[] {
  return fs
    .readFileSync(pemFile, 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('-----'));
}

async function startCli(h: Harness, args: string[], env?: NodeJS.ProcessEnv): Promise<{ p: CliProcess; port: number }> {
  const port = await freePort();
  const p = new CliProcess([...args, '--port', String(port)], undefined, env);
  h.onCleanup(() => void p.stop('SIGKILL'));
  const first = await p.firstLine(60_000);
  expect(first).toContain(`https://127.0.0.1:${port}`);
  return { p, port };
}

describe('regtape ca', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('creates the CA once: same certificate on every run, key 0600, path on the last line', async () => {
    const dir = path.join(h.tempDir('ca'), 'nested', 'ca');
    const a = await runCli(['ca', '--ca-dir', dir]);
    expect(a.code).toBe(0);
    const certPath = path.join(dir, 'ca.pem');
    expect(a.stdout).toBe(`${certPath}\n`);
    expect(a.stderr).toContain('created a new CA');
    expect(a.stderr).toContain(`SSL_CERT_FILE=${certPath}`);
    const first = fs.readFileSync(certPath, 'utf8');
    expect(new X509Certificate(first).ca).toBe(true);
    expect(fs.statSync(path.join(dir, 'ca.key')).mode & 0o777).toBe(0o600);
    for (const line of keyMaterial(path.join(dir, 'ca.key'))) expect(a.stdout + a.stderr).not.toContain(line);

    const b = await runCli(['ca', '--ca-dir', dir]);
    expect(b.code).toBe(0);
    expect(b.stdout.trim().split('\n').pop()).toBe(certPath);
    expect(b.stderr).not.toContain('created a new CA');
    expect(fs.readFileSync(certPath, 'utf8')).toBe(first);
  });

  it('REGTAPE_CA_DIR picks the folder; two processes creating it at once end with one CA', async () => {
    const dir = path.join(h.tempDir('ca-race'), 'ca');
    const procs = [0, 1, 2].map(() => new CliProcess(['ca'], undefined, { REGTAPE_CA_DIR: dir }));
    const codes = await Promise.all(procs.map((p) => p.exited));
    expect(codes).toEqual([0, 0, 0]);
    for (const p of procs) expect(p.stdout).toBe(`${path.join(dir, 'ca.pem')}\n`);
    expect(fs.readdirSync(dir).sort()).toEqual(['ca.key', 'ca.pem']);
    // the certificate on disk belongs to the key on disk (a torn pair would fail here)
    const ca = await runCli(['ca', '--ca-dir', dir]);
    expect(ca.code).toBe(0);
  });
});

describe('record --tls and replay --tls, TLS verified by skopeo, ctr, podman and the docker CLI', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());
  let reg: Registry;
  let image: Image;
  let caDir: string;
  let caPem: string;
  let fixtures: string;
  let recordLog = '';

  /** hosts.toml for ctr: this https host, trusting regtape's CA */
  const hostsDir = (port: number): string => {
    const d = h.tempDir('hosts');
    fs.mkdirSync(path.join(d, `127.0.0.1:${port}`));
    fs.writeFileSync(
      path.join(d, `127.0.0.1:${port}`, 'hosts.toml'),
      `server = "https://127.0.0.1:${port}"\n\n[host."https://127.0.0.1:${port}"]\n  capabilities = ["pull", "resolve"]\n  ca = ${JSON.stringify(caPem)}\n`,
    );
    return d;
  };

  const skopeoPull = async (port: number, trust: boolean): Promise<RunResult & { dir: string }> => {
    const dir = h.tempDir('pull');
    const r = await skopeo(['copy', '--src-creds', CREDS, `docker://127.0.0.1:${port}/org/app:v1`, `dir:${dir}`], {
      ...limit,
      env: trust ? { SSL_CERT_FILE: caPem } : {},
    });
    return { ...r, dir };
  };

  const ctrPull = async (port: number): Promise<void> => {
    const c = await startContainerd({ tmp: h.tmp });
    h.onCleanup(() => c.stop());
    try {
      const ref = `127.0.0.1:${port}/org/app:v1`;
      ok(await c.pull(ref, { plainHttp: false, hostsDir: hostsDir(port), user: CREDS, ...limit }), 'ctr pull over https');
      await c.checkImage(ref, image);
    } finally {
      await c.stop();
    }
  };

  const podmanPull = async (port: number): Promise<void> => {
    const p = createPodman({ tmp: h.tmp });
    h.onCleanup(() => p.remove());
    try {
      const ref = `127.0.0.1:${port}/org/app:v1`;
      ok(await p.pull(ref, { tlsVerify: true, creds: CREDS, env: { SSL_CERT_FILE: caPem }, ...limit }), 'podman pull --tls-verify=true');
      await p.checkImage(ref, image);
    } finally {
      await p.remove();
    }
  };

  /** docker CLI without --insecure: it verifies regtape's certificate with SSL_CERT_FILE */
  const dockerInspect = async (port: number): Promise<void> => {
    const [user, password] = CREDS.split(':');
    const r = ok(
      await dockerManifestInspect(`127.0.0.1:${port}/org/app:v1`, { insecure: false, creds: { host: `127.0.0.1:${port}`, user, password }, env: { SSL_CERT_FILE: caPem }, ...limit }),
      'docker manifest inspect (TLS verified)',
    );
    expect(r.stdout).toContain(image.configDigest);
  };

  beforeAll(async () => {
    reg = await h.startRegistry({ mode: 'hub', tlsNames: ['ghcr.io'] });
    image = await h.makeImage({ layers: 2, layerSize: 256 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/org/app:v1`, CREDS);
    caDir = path.join(h.tempDir('regtape-ca'), 'ca');
    caPem = path.join(caDir, 'ca.pem');
    fixtures = h.tempDir('fixtures');
  });

  it('the registry is only valid as ghcr.io: without --resolve/--upstream-ca the recorder refuses with a clear message', async () => {
    const noCa = await runCli(['record', '--upstream', 'https://ghcr.io', '--resolve', `ghcr.io=127.0.0.1:${reg.port}`, '--port', '0', '--out', h.tempDir('x')]);
    expect(noCa.code).toBe(2);
    expect(noCa.stderr.trim()).toMatch(
      new RegExp(`^regtape: upstream https://ghcr\\.io at 127\\.0\\.0\\.1:${reg.port} \\(--resolve\\): its TLS certificate is not trusted \\(\\w+\\): .*--upstream-ca`),
    );
    // by its address, the certificate (for ghcr.io) does not match, even with the CA trusted
    const byIp = await runCli(['record', '--upstream', reg.url, '--upstream-ca', reg.caCert!, '--port', '0', '--out', h.tempDir('x')]);
    expect(byIp.code).toBe(2);
    expect(byIp.stderr).toContain('ERR_TLS_CERT_ALTNAME_INVALID');
    const badCa = await runCli(['record', '--upstream', 'https://ghcr.io', '--upstream-ca', '/nonexistent/ca.pem', '--port', '0', '--out', h.tempDir('x')]);
    expect(badCa.stderr.trim()).toBe('regtape: --upstream-ca /nonexistent/ca.pem: cannot read it (ENOENT)');
    const badResolve = await runCli(['record', '--upstream', 'https://ghcr.io', '--resolve', 'ghcr.io', '--port', '0', '--out', h.tempDir('x')]);
    expect(badResolve.stderr.trim()).toBe('regtape: --resolve "ghcr.io": not HOST=ADDR[:PORT] (expected HOST=ADDR:PORT, e.g. ghcr.io=127.0.0.1:5000)');
  });

  it('records skopeo, ctr, podman and docker CLI pulls through record --tls', async () => {
    const { p, port } = await startCli(h, [
      'record', '--tls', '--ca-dir', caDir,
      '--upstream', 'https://ghcr.io', '--resolve', `ghcr.io=127.0.0.1:${reg.port}`, '--upstream-ca', reg.caCert!,
      '--out', fixtures,
    ]);
    expect(fs.statSync(path.join(caDir, 'ca.key')).mode & 0o777).toBe(0o600);

    const pulled = await skopeoPull(port, true);
    ok(pulled, 'skopeo pull through record --tls');
    expect(checkDirImage(pulled.dir).manifestDigest).toBe(image.manifestDigest);
    await ctrPull(port);
    await podmanPull(port);
    await dockerInspect(port);

    expect(await p.stop('SIGINT')).toBe(0);
    recordLog = p.stdout + p.stderr;
    expect(recordLog).toContain(`clients must trust ${caPem}`);
    // the token realm and the CDN redirect went through the recorder (it rewrote them to https://127.0.0.1:PORT)
    expect(recordLog).toMatch(/GET \/__regtape\/token\/http\/127\.0\.0\.1/);
    expect(recordLog).toMatch(/GET \/__regtape\/redirect\//);
  });

  it('replays offline over TLS to skopeo, ctr, podman and docker CLI, refuses an untrusting client, answers plain HTTP clearly', async () => {
    await reg.stop(); // upstream, token server and CDN all gone
    const { p, port } = await startCli(h, ['replay', fixtures, '--tls', '--strict'], { REGTAPE_CA_DIR: caDir });

    const pulled = await skopeoPull(port, true);
    ok(pulled, 'skopeo pull from replay --tls');
    const check = checkDirImage(pulled.dir);
    expect(check.manifestDigest).toBe(image.manifestDigest);
    expect(check.blobs).toEqual([image.configDigest, ...image.layerDigests]);
    expect(fs.readFileSync(path.join(pulled.dir, 'manifest.json')).equals(image.manifestBytes)).toBe(true);
    await ctrPull(port);
    await podmanPull(port);
    await dockerInspect(port);

    // TLS verification is really on: without regtape's CA, skopeo refuses the certificate
    const untrusting = await skopeoPull(port, false);
    expect(untrusting.code).not.toBe(0);
    expect(untrusting.stderr).toContain('x509: certificate signed by unknown authority');

    // plain HTTP on the TLS port
    const plain = await new Promise<{ status?: number; body: string }>((resolve, reject) => {
      http.get(`http://127.0.0.1:${port}/v2/`, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      }).on('error', reject);
    });
    expect(plain.status).toBe(400);
    expect(plain.body).toContain('regtape serves HTTPS on this port (--tls): use https://');

    // the certificate names 127.0.0.1, ::1 and localhost; node verifies it by name with the CA
    const viaName = await new Promise<number | undefined>((resolve, reject) => {
      https.get({ host: '127.0.0.1', port, path: '/v2/', servername: 'localhost', ca: fs.readFileSync(caPem) }, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).on('error', reject);
    });
    expect([200, 401]).toContain(viaName); // hub mode: /v2/ may answer the recorded challenge

    expect(await p.stop('SIGINT')).toBe(0);
    const replayLog = p.stdout + p.stderr;
    expect(replayLog).toContain('0 unmatched');
    expect(replayLog).toContain('TLS handshake from 127.0.0.1 failed: the client does not trust the certificate');

    // the CA key is in no fixture and no log; the live https origin is not in the fixtures either
    const secrets = keyMaterial(path.join(caDir, 'ca.key'));
    const texts = filesUnder(fixtures)
      .filter((f) => !f.includes(`${path.sep}bodies${path.sep}`))
      .map((f) => fs.readFileSync(f, 'utf8'));
    expect(texts.length).toBeGreaterThan(5);
    for (const t of [...texts, recordLog, replayLog]) for (const s of secrets) expect(t).not.toContain(s);
    for (const t of texts) expect(t).not.toMatch(/https:\/\/127\.0\.0\.1:\d+/);
    expect(texts.join('\n')).toContain('http://regtape.invalid/__regtape/token/');
  });
});

describe('--tls with your own certificate', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('serves --tls-cert/--tls-key; bad files get one line each', async () => {
    const d = h.tempDir('own-cert');
    const crt = path.join(d, 'own.crt');
    const key = path.join(d, 'own.key');
    ok(await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=registry.test', '-addext', 'subjectAltName=DNS:registry.test', '-keyout', key, '-out', crt]), 'openssl');
    const { p, port } = await startCli(h, ['replay', 'examples/hello-pull', '--tls', '--tls-cert', crt, '--tls-key', key]);
    const status = await new Promise<number | undefined>((resolve, reject) => {
      https.get({ host: '127.0.0.1', port, path: '/v2/', servername: 'registry.test', ca: fs.readFileSync(crt) }, (res) => {
        res.resume();
        resolve(res.statusCode);
      }).on('error', reject);
    });
    expect(status).toBe(200);
    expect(p.stderr).not.toContain('clients must trust'); // not regtape's CA
    expect(await p.stop('SIGINT')).toBe(0);

    const other = path.join(d, 'other.key');
    ok(await run('openssl', ['genpkey', '-algorithm', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', other]), 'openssl');
    const cases: Array<[string[], string]> = [
      [['--tls', '--tls-cert', path.join(d, 'missing.crt'), '--tls-key', key], `regtape: --tls-cert ${path.join(d, 'missing.crt')}: cannot read it (ENOENT)`],
      [['--tls', '--tls-cert', key, '--tls-key', key], `regtape: --tls-cert ${key}: not a certificate in PEM (-----BEGIN CERTIFICATE-----)`],
      [['--tls', '--tls-cert', crt, '--tls-key', other], `regtape: --tls-key ${other} is not the key of the certificate in ${crt}`],
      [['--tls', '--tls-cert', crt], 'regtape: --tls-cert needs --tls-key (the private key of that certificate)'],
      [['--tls-cert', crt, '--tls-key', key], 'regtape: --tls-cert needs --tls'],
      [['--tls', '--tls-cert', crt, '--tls-key', key, '--tls-name', 'x.test'], 'regtape: --tls-name has no effect with --tls-cert: the names are those of your certificate'],
    ];
    for (const [flags, message] of cases) {
      const r = await runCli(['replay', 'examples/hello-pull', '--port', '0', ...flags]);
      expect({ flags, code: r.code, stderr: r.stderr.trim() }).toEqual({ flags, code: 2, stderr: message });
    }
  });
});

describe('replay --tls --record-missing with --resolve and --upstream-ca', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('records what is missing from https://quay.io (at a local address), then serves it offline', async () => {
    const reg = await h.startRegistry({ mode: 'plain', tlsNames: ['quay.io'] });
    const image = await h.makeImage({ layers: 1, layerSize: 128 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/team/tool:v1`);
    const caDir = path.join(h.tempDir('regtape-ca'), 'ca');
    const fixtures = h.tempDir('fixtures');
    const pull = async (port: number): Promise<string> => {
      const dir = h.tempDir('pull');
      ok(await skopeo(['copy', `docker://127.0.0.1:${port}/team/tool:v1`, `dir:${dir}`], { ...limit, env: { SSL_CERT_FILE: path.join(caDir, 'ca.pem') } }), 'skopeo pull');
      return checkDirImage(dir).manifestDigest;
    };

    const first = await replay({
      fixtures,
      port: 0,
      tls: { caDir },
      recordMissing: { upstream: 'https://quay.io', resolve: [`quay.io=127.0.0.1:${reg.port}`], upstreamCa: reg.caCert! },
    });
    h.onCleanup(() => first.close().catch(() => undefined));
    expect(first.url).toBe(`https://127.0.0.1:${first.port}`);
    expect(first.caCert).toBe(path.join(caDir, 'ca.pem'));
    expect(await pull(first.port)).toBe(image.manifestDigest);
    await first.close(); // fixtures are written once each exchange completed: after the client had its answer
    expect(first.recorded().length).toBeGreaterThanOrEqual(3);
    await reg.stop();

    const second = await replay({ fixtures, port: 0, tls: { caDir }, strict: true });
    h.onCleanup(() => second.close().catch(() => undefined));
    expect(await pull(second.port)).toBe(image.manifestDigest);
    await second.close();
  });
});
