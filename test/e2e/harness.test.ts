// Proves the e2e harness against real software: docker-registry 2.8 in every mode, skopeo, docker CLI.
import * as fs from 'fs';
import * as http from 'http';
import {
  checkDirImage,
  dockerManifestInspect,
  freePort,
  isPortOpen,
  Harness,
  Image,
  pushImage,
  Registry,
  RegistryMode,
  run,
  skopeo,
  skopeoInspectRaw,
  waitForPort,
} from '../harness';

jest.setTimeout(60_000);

const h = new Harness();
afterAll(() => h.cleanup());

/** every PID and temp dir the tests saw, to prove that cleanup removes them */
const seenPids: number[] = [];
const seenDirs: string[] = [];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // a zombie is not alive
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

/** live child processes of this (jest) process, from /proc */
function childrenOfThisProcess(): Array<{ pid: number; cmd: string }> {
  const out: Array<{ pid: number; cmd: string }> = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(ppid) === process.pid && state !== 'Z') out.push({ pid: Number(d), cmd: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) });
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

function post(url: string, form: Record<string, string>): Promise<{ status: number; body: Buffer }> {
  const data = new URLSearchParams(form).toString();
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent: false, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

function get(url: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
  });
}

describe('harness building blocks', () => {
  test('freePort / waitForPort / Procs', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const child = h.procs.spawn('listener', process.execPath, [
      '-e',
      `console.log('listening ${port}'); require('net').createServer().listen(${port}, '127.0.0.1');`,
    ]);
    seenPids.push(child.pid ?? -1);
    await waitForPort(port, 10_000, () => h.procs.exitError('listener'));
    expect(h.procs.isRunning('listener')).toBe(true);
    expect(childrenOfThisProcess().map((c) => c.pid)).toContain(child.pid);
    await h.procs.stop('listener');
    expect(alive(child.pid ?? -1)).toBe(false);
    expect(h.procs.logs('listener')).toContain(`listening ${port}`);
    await expect(waitForPort(port, 300)).rejects.toThrow(/did not open/);
  });

  test('run reports exit codes, missing commands and timeouts without throwing', async () => {
    const ok = await run('sh', ['-c', 'read x; echo "got $x"; echo err >&2; exit 3'], { input: 'hi\n' });
    expect(ok).toMatchObject({ code: 3, stdout: 'got hi\n', stderr: 'err\n', timedOut: false });
    const missing = await run('/nonexistent/regtape-cmd', []);
    expect(missing.code).toBe(127);
    const slow = await run('sleep', ['30'], { timeoutMs: 200 });
    expect(slow.timedOut).toBe(true);
    expect(slow.stderr).toMatch(/timeout/);
  });
});

const MODES: RegistryMode[] = ['plain', 'basic', 'token', 'redirect', 'hub'];
const ALICE = 'alice:alicepw';

describe.each(MODES)('%s registry', (mode) => {
  let reg: Registry;
  let img: Image;
  const auth = mode === 'basic' || mode === 'token' || mode === 'hub';
  const creds = auth ? ALICE : undefined;

  beforeAll(async () => {
    reg = await h.startRegistry({ mode });
    seenPids.push(reg.pid);
    seenDirs.push(reg.stateDir);
    img = await h.makeImage({ tag: 'v1' });
    seenDirs.push(img.dir);
  });

  test('starts on loopback with the expected auth challenge', async () => {
    expect(reg.host).toBe(`127.0.0.1:${reg.port}`);
    expect(reg.url).toBe(`http://${reg.host}`);
    const r = await get(`${reg.url}/v2/`);
    expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0');
    if (mode === 'basic') {
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Basic realm="regtape-basic"');
    } else if (mode === 'token' || mode === 'hub') {
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toBe(`Bearer realm="${reg.tokenUrl}",service="registry.docker.io"`);
    } else {
      expect(r.status).toBe(200);
    }
    expect(reg.users.alice.password).toBe('alicepw');
  });

  test('push with skopeo, pull back, blobs and manifest intact', async () => {
    const pushed = await pushImage(img, `${reg.host}/test/img:v1`, creds);
    expect(pushed.digest).toBe(img.manifestDigest);
    const pulled = await h.pullToDir(`${reg.host}/test/img:v1`, creds);
    const checked = checkDirImage(pulled.dir);
    expect(checked.blobs).toEqual([img.configDigest, ...img.layerDigests]);
    // skopeo keeps an OCI manifest byte for byte through push and pull (no conversion needed)
    expect(pulled.manifestBytes.equals(img.manifestBytes)).toBe(true);
    expect(checked.manifestDigest).toBe(img.manifestDigest);
    for (const d of img.layerDigests) {
      expect(fs.readFileSync(`${pulled.dir}/${d.slice(7)}`).equals(fs.readFileSync(`${img.dir}/blobs/sha256/${d.slice(7)}`))).toBe(true);
    }
    const raw = await skopeoInspectRaw(`${reg.host}/test/img:v1`, creds);
    expect(raw.equals(img.manifestBytes)).toBe(true);
  });

  if (mode === 'redirect' || mode === 'hub') {
    test('blob requests are redirected to the CDN, which served the pull', async () => {
      const cdn = reg.cdn;
      if (!cdn) throw new Error('no cdn');
      expect(reg.cdnUrl).toBe(cdn.url);
      const served = cdn.requests.filter((r) => r.method === 'GET' && r.status === 200).map((r) => r.url);
      for (const d of [img.configDigest, ...img.layerDigests]) {
        expect(served).toContain(`/docker/registry/v2/blobs/sha256/${d.slice(7, 9)}/${d.slice(7)}/data`);
      }
      expect(cdn.requests.every((r) => r.auth === undefined)).toBe(true);
      if (mode === 'redirect') {
        const r = await get(`${reg.url}/v2/test/img/blobs/${img.layerDigests[0]}`);
        expect(r.status).toBe(307);
        const loc = String(r.headers.location);
        expect(loc.startsWith(`${cdn.url}/docker/registry/v2/blobs/sha256/`)).toBe(true);
        const ranged = await get(loc, { Range: 'bytes=0-9' });
        expect(ranged.status).toBe(206);
        expect(ranged.body.length).toBe(10);
      }
    });
  }

  if (mode === 'token' || mode === 'hub') {
    test('token server: grants, anonymous pull, refused push, bad password', async () => {
      const ts = reg.tokenServer;
      if (!ts) throw new Error('no token server');
      const aliceGrants = ts.requests.filter((r) => r.user === 'alice').flatMap((r) => r.access ?? []);
      expect(aliceGrants.some((a) => a.name === 'test/img' && a.actions.includes('push'))).toBe(true);
      // anonymous pull
      const anon = await h.pullToDir(`${reg.host}/test/img:v1`);
      expect(checkDirImage(anon.dir).manifestDigest).toBe(img.manifestDigest);
      expect(ts.requests.some((r) => r.user === null && r.status === 200)).toBe(true);
      // bob may pull but not push
      await expect(pushImage(img, `${reg.host}/test/bob:v1`, 'bob:bobpw')).rejects.toThrow(/denied|unauthorized/i);
      expect(checkDirImage((await h.pullToDir(`${reg.host}/test/img:v1`, 'bob:bobpw')).dir).manifestDigest).toBe(img.manifestDigest);
      // wrong password
      const bad = await skopeo(['inspect', '--raw', '--tls-verify=false', '--creds', 'alice:wrong', `docker://${reg.host}/test/img:v1`]);
      expect(bad.code).not.toBe(0);
      expect(ts.requests.some((r) => r.status === 401)).toBe(true);
      // offline_token + refresh_token, POST password grant
      const basic = Buffer.from(ALICE).toString('base64');
      const off = await get(`${ts.realm}?service=registry.docker.io&scope=repository:test/img:pull,push&offline_token=true&client_id=x`, {
        Authorization: `Basic ${basic}`,
      });
      const offBody = JSON.parse(off.body.toString()) as { token: string; access_token: string; refresh_token?: string; expires_in: number; issued_at: string };
      expect(off.status).toBe(200);
      expect(offBody.refresh_token).toBeTruthy();
      expect(ts.decode(offBody.token)?.access).toEqual([{ type: 'repository', name: 'test/img', actions: ['pull', 'push'] }]);
      const bobTok = await get(`${ts.realm}?service=registry.docker.io&scope=repository:test/img:pull,push`, {
        Authorization: `Basic ${Buffer.from('bob:bobpw').toString('base64')}`,
      });
      expect(ts.decode((JSON.parse(bobTok.body.toString()) as { token: string }).token)?.access[0].actions).toEqual(['pull']);
      const wrong = await get(`${ts.realm}?service=registry.docker.io`, { Authorization: `Basic ${Buffer.from('alice:nope').toString('base64')}` });
      expect(wrong.status).toBe(401);
      expect(JSON.parse(wrong.body.toString())).toEqual({ details: 'incorrect username or password' });
      // POST grant_type=password (containerd) and grant_type=refresh_token (docker after login)
      const service = 'registry.docker.io';
      const pw = await post(ts.realm, { grant_type: 'password', username: 'bob', password: 'bobpw', service, scope: 'repository:test/img:pull,push', client_id: 'containerd-client' });
      expect(pw.status).toBe(200);
      const pwBody = JSON.parse(pw.body.toString()) as { access_token: string; refresh_token?: string };
      expect(ts.decode(pwBody.access_token)?.access).toEqual([{ type: 'repository', name: 'test/img', actions: ['pull'] }]);
      const rt = await post(ts.realm, { grant_type: 'refresh_token', refresh_token: offBody.refresh_token ?? '', service, scope: 'repository:test/img:pull', client_id: 'docker' });
      expect(rt.status).toBe(200);
      expect(ts.decode((JSON.parse(rt.body.toString()) as { access_token: string }).access_token)?.sub).toBe('alice');
      expect((await post(ts.realm, { grant_type: 'password', username: 'bob', password: 'x', service })).status).toBe(401);
      expect((await post(ts.realm, { grant_type: 'refresh_token', refresh_token: 'nope', service })).status).toBe(401);
      // the registry accepts the token server's tokens
      const reg401 = await get(`${reg.url}/v2/test/img/manifests/v1`, { Accept: 'application/vnd.oci.image.manifest.v1+json' });
      expect(reg401.status).toBe(401);
      const reg200 = await get(`${reg.url}/v2/test/img/manifests/v1`, {
        Accept: 'application/vnd.oci.image.manifest.v1+json',
        Authorization: `Bearer ${pwBody.access_token}`,
      });
      expect(reg200.status).toBe(200);
      expect(reg200.body.equals(img.manifestBytes)).toBe(true);
    });
  }

  if (mode === 'plain' || mode === 'token' || mode === 'hub') {
    test('docker manifest inspect works anonymously', async () => {
      const r = await dockerManifestInspect(`${reg.host}/test/img:v1`);
      if (r.code !== 0) throw new Error(`docker manifest inspect failed:\n${r.stderr}`);
      const m = JSON.parse(r.stdout) as { config: { digest: string }; layers: Array<{ digest: string }> };
      expect(m.config.digest).toBe(img.configDigest);
      expect(m.layers.map((l) => l.digest)).toEqual(img.layerDigests);
    });
  }

  if (mode === 'basic') {
    test('docker manifest inspect with config.json credentials; anonymous is refused', async () => {
      const ok = await dockerManifestInspect(`${reg.host}/test/img:v1`, { creds: { host: reg.host, user: 'alice', password: 'alicepw' } });
      if (ok.code !== 0) throw new Error(`docker manifest inspect failed:\n${ok.stderr}`);
      const no = await dockerManifestInspect(`${reg.host}/test/img:v1`);
      expect(no.code).not.toBe(0);
    });
  }

  if (mode === 'plain') {
    test('skopeo runs with a private, empty blob-info cache', async () => {
      const r = await skopeo(['--debug', 'copy', '--dest-tls-verify=false', img.ref, `docker://${reg.host}/test/again:v1`]);
      expect(r.code).toBe(0);
      expect(r.stderr).toContain(`Using blob info cache at ${r.blobInfoCacheDir}/blob-info-cache-v1.boltdb`);
      expect(fs.existsSync(r.blobInfoCacheDir)).toBe(false);
    });
  }

  afterAll(async () => {
    await reg?.stop();
    await reg?.stop(); // idempotent
  });
});

describe('token registry variants', () => {
  test('x5c key reference, ES256, no anonymous access', async () => {
    const reg = await h.startRegistry({ mode: 'token', keyRef: 'x5c', keyType: 'ec', anonymousActions: [] });
    seenPids.push(reg.pid);
    const img = await h.makeImage({ layers: 1, layerSize: 1024, tag: 'small' });
    await pushImage(img, `${reg.host}/x5c/img:small`, ALICE);
    expect((await skopeoInspectRaw(`${reg.host}/x5c/img:small`, 'bob:bobpw')).equals(img.manifestBytes)).toBe(true);
    await expect(skopeoInspectRaw(`${reg.host}/x5c/img:small`)).rejects.toThrow(/unauthorized|denied|authentication required/i);
    await reg.stop();
    expect(alive(reg.pid)).toBe(false);
    expect(fs.existsSync(reg.stateDir)).toBe(false);
  });
});

describe('cleanup', () => {
  test('leaves no processes, servers or temp dirs behind', async () => {
    const ports = h.registries.flatMap((r) => [r.port, r.tokenServer?.port, r.cdn?.port]).filter((p): p is number => !!p);
    await h.cleanup();
    for (const pid of seenPids) expect(alive(pid)).toBe(false);
    for (const d of seenDirs) expect(fs.existsSync(d)).toBe(false);
    for (const p of ports) expect(await isPortOpen(p)).toBe(false);
    expect(h.tmp.list()).toEqual([]);
    // no child process of this test process is left (registries, watchdogs, skopeo, docker)
    const children = childrenOfThisProcess();
    expect(children).toEqual([]);
  });
});
