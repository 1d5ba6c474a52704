// The seed scenario: the Docker daemon pulls from a Docker-Hub-like registry (Bearer token auth from a
// separate token server, blobs redirected to a separate CDN) through `regtape record`; then the registry,
// token server and CDN are gone and the same pull is served by `regtape replay` alone, both by its own
// address and as the daemon's registry mirror (`docker pull alpine:TAG`).
import * as fs from 'fs';
import * as path from 'path';
import { filesUnder } from '../support/reliability';
import { record, replay } from '../../src';
import type { RecordServer, ReplayServer } from '../../src';
import { describeFailure, Dockerd, freePort, Harness, Image, pushImage, Registry, run, RunResult, startDockerd } from '../harness';

jest.setTimeout(90_000);

const TAG = 'regtape-e2e';
const REPO = 'library/alpine';
const ALICE = 'alice:alicepw';

const h = new Harness();

let reg: Registry;
let img: Image;
let pushedDigest: string;
let fixtures: string;
let rec: RecordServer | undefined;
let recPort = 0;
let rp: ReplayServer | undefined;
const dockerds: Dockerd[] = [];
const recLog: string[] = [];
const replayLog: string[] = [];
let recordedId = '';

async function newDockerd(mirrors: string[] = []): Promise<Dockerd> {
  const d = await startDockerd({ mirrors, debug: true, tmp: h.tmp });
  dockerds.push(d);
  return d;
}

/** fail with everything that helps: the command's output, dockerd's log, regtape's logs */
function must(d: Dockerd, r: RunResult, what: string): RunResult {
  if (r.code === 0) return r;
  const tail = (lines: string[]): string => lines.slice(-40).join('\n');
  const daemon = d
    .logs()
    .split('\n')
    .filter((l) => !/level=debug msg="(Calling|form data)/.test(l))
    .slice(-60)
    .join('\n');
  throw new Error(
    `${what} failed: ${describeFailure(r)}\n--- dockerd (${d.logFile}) ---\n${daemon}` +
      `\n--- regtape record log ---\n${tail(recLog)}\n--- regtape replay log ---\n${tail(replayLog)}` +
      (rp ? `\n--- replay unmatched ---\n${JSON.stringify(rp.unmatched(), null, 1)}` : ''),
  );
}

async function inspect(d: Dockerd, ref: string): Promise<{ Id: string; RepoTags: string[]; RepoDigests: string[] }> {
  const r = must(d, await d.docker(['image', 'inspect', '--format', '{{json .}}', ref]), `docker image inspect ${ref}`);
  return JSON.parse(r.stdout) as { Id: string; RepoTags: string[]; RepoDigests: string[] };
}


/** processes whose command line mentions one of these strings (our dockerd state dirs, namespaces) */
async function processesMentioning(needles: string[]): Promise<string[]> {
  const ps = await run('ps', ['-eo', 'pid=,args='], { timeoutMs: 10_000 });
  return ps.stdout
    .split('\n')
    .filter((l) => /dockerd|containerd/.test(l) && needles.some((n) => l.includes(n)));
}

beforeAll(() => {
  fixtures = h.tempDir('fixtures');
});

afterAll(async () => {
  const needles = dockerds.flatMap((d) => [d.stateDir, d.namespace]);
  const pids = dockerds.flatMap((d) => [d.pid, d.containerdPid()]).filter((p): p is number => typeof p === 'number' && p > 0);
  const errors: unknown[] = [];
  const attempt = async (fn: () => Promise<unknown> | undefined): Promise<void> => {
    try {
      await fn();
    } catch (e) {
      errors.push(e);
    }
  };
  for (const d of dockerds) await attempt(() => d.stop());
  await attempt(() => rec?.close());
  await attempt(() => rp?.close());
  await attempt(() => h.cleanup()); // the registry (if still up), image and fixture temp dirs
  const left = await processesMentioning(needles);
  const alive = pids.filter((p) => fs.existsSync(`/proc/${p}`) && !/\) Z /.test(fs.readFileSync(`/proc/${p}/stat`, 'utf8')));
  for (const d of dockerds) if (fs.existsSync(d.stateDir)) errors.push(new Error(`dockerd state dir ${d.stateDir} was not removed`));
  // dockerd bind-mounts its data-root onto itself; stop() must not leave that mount behind
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => dockerds.some((d) => l.includes(d.stateDir)));
  if (mounts.length) errors.push(new Error(`mounts left behind:\n${mounts.join('\n')}`));
  if (left.length || alive.length) errors.push(new Error(`processes left behind:\n${left.join('\n')}\npids alive: ${alive.join(' ')}`));
  if (errors.length) throw errors[0];
});

test('1. a Hub-like registry (token auth + CDN redirects) holds library/alpine:TAG', async () => {
  reg = await h.startRegistry({ mode: 'hub' });
  img = await h.makeImage({ layers: 2, layerSize: 64 * 1024, tag: TAG });
  pushedDigest = (await pushImage(img, `${reg.host}/${REPO}:${TAG}`, ALICE)).digest;
  expect(pushedDigest).toBe(img.manifestDigest);
});

test('2. dockerd pulls through regtape record (anonymous token, blobs via the CDN redirect)', async () => {
  rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: (l) => recLog.push(l) });
  recPort = rec.port;
  const d = await newDockerd();
  expect(d.containerdPid()).toBeDefined(); // the containerd it launched, to check it is gone at the end
  const ref = `127.0.0.1:${rec.port}/${REPO}:${TAG}`;
  must(d, await d.docker(['pull', ref]), `docker pull ${ref} (through the recorder)`);
  const info = await inspect(d, ref);
  // the image ID is the config digest: the same config bytes arrived
  expect(info.Id).toBe(img.configDigest);
  expect(info.RepoDigests).toEqual([`127.0.0.1:${rec.port}/${REPO}@${img.manifestDigest}`]);
  recordedId = info.Id;
  // the daemon only ever talked to regtape: token and blob bytes went through it too
  expect(reg.tokenServer!.requests.some((r) => r.user === null && r.status === 200)).toBe(true);
  const cdnGets = reg.cdn!.requests.filter((r) => r.method === 'GET' && r.status === 200).map((r) => r.url);
  for (const dg of [img.configDigest, ...img.layerDigests]) expect(cdnGets.some((u) => u.includes(dg.slice(7)))).toBe(true);
  await rec.close();
  expect(rec.written().length).toBeGreaterThan(0);
});

test('3. registry, token server and CDN gone: dockerd pulls the same image from regtape replay on another port', async () => {
  await reg.stop();
  const d = dockerds[0];
  const recRef = `127.0.0.1:${recPort}/${REPO}:${TAG}`;
  must(d, await d.docker(['rmi', recRef]), `docker rmi ${recRef}`);
  expect((await d.docker(['image', 'inspect', recordedId])).code).not.toBe(0);

  let port = await freePort();
  while (port === recPort) port = await freePort();
  rp = await replay({ fixtures, port, log: (l) => replayLog.push(l) });
  expect(rp.port).toBe(port);
  const ref = `127.0.0.1:${rp.port}/${REPO}:${TAG}`;
  must(d, await d.docker(['pull', ref]), `docker pull ${ref} (from the replayer)`);
  const info = await inspect(d, ref);
  expect(info.Id).toBe(recordedId);
  expect(info.RepoDigests).toEqual([`127.0.0.1:${rp.port}/${REPO}@${img.manifestDigest}`]);
  expect(rp.unmatched()).toEqual([]);
  expect(rp.served()).toBeGreaterThan(0);
});

test('4. the replayer as registry-mirrors: `docker pull alpine:TAG` works offline', async () => {
  if (!rp) throw new Error('no replayer (step 3 failed)');
  await dockerds[0].stop();
  const d = await newDockerd([rp.url]);
  const ref = `alpine:${TAG}`;
  const servedBefore = rp.served();
  must(d, await d.docker(['pull', ref]), `docker pull ${ref} (replayer as mirror)`);
  const info = await inspect(d, ref);
  expect(info.Id).toBe(recordedId);
  expect(info.RepoTags).toEqual([`alpine:${TAG}`]);
  expect(info.RepoDigests).toEqual([`alpine@${img.manifestDigest}`]);
  expect(rp.served()).toBeGreaterThan(servedBefore);
  expect(rp.unmatched()).toEqual([]);
  // the two pulls used every recorded exchange (/v2/, token, HEAD+GET manifest, 3 blob redirects, 3 CDN GETs)
  expect(rp.unused().map((ex) => `${ex.request.method} ${ex.request.url}`)).toEqual([]);
  if (process.env.REGTAPE_SHOW_LOGS === '1') process.stderr.write(`replay log:\n${replayLog.join('\n')}\n`);
});

test('5. no password, Basic credential or JWT in any fixture file', () => {
  const files = filesUnder(fixtures);
  expect(files.length).toBeGreaterThan(0);
  const needles = ['alicepw', 'bobpw', Buffer.from('alice:alicepw').toString('base64'), Buffer.from('bob:bobpw').toString('base64')];
  const jwt = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}/;
  const found: string[] = [];
  for (const f of files) {
    const text = fs.readFileSync(f).toString('latin1');
    for (const n of needles) if (text.includes(n)) found.push(`${path.relative(fixtures, f)}: ${n}`);
    const m = jwt.exec(text);
    if (m) found.push(`${path.relative(fixtures, f)}: JWT ${m[0].slice(0, 40)}…`);
  }
  expect(found).toEqual([]);
});
