/**
 * regtape benchmark: the plain docker-registry against `regtape replay` (and `regtape record`) on loopback.
 *
 *   npm run bench            (builds dist/, compiles this file to node_modules/.cache/regtape-bench, runs it)
 *
 * One run: set up a registry with a BENCH_LAYER_MB (default 200) MiB one-layer image and a 2 MiB one,
 * record both with skopeo pulls through `regtape record`, then measure in ROUNDS interleaved rounds
 * (the order of the servers alternates): 200 MB blob GET throughput (curl), 2 MB blob GETs and manifest
 * GETs with 16 connections (wrk), full skopeo pulls (direct, from replay, through a fresh recorder),
 * and replay start-up with 10,000 generated fixtures. regtape always runs as its own process (the CLI),
 * so RSS is per process (VmHWM after clear_refs, plus 50 ms VmRSS sampling).
 * Prints a table and writes bench/results/latest.json plus a timestamped copy.
 *
 * env: BENCH_LAYER_MB (200), BENCH_ROUNDS (5), BENCH_WRK_SECONDS (5), BENCH_FIXTURES (10000),
 *      BENCH_REGTAPE_CLI (default <repo>/dist/cli.js: another build's cli.js, for A/B runs),
 *      REGTAPE_KEEP=1 keeps the temp dirs (for their logs).
 * Besides wall-clock numbers it reports the CPU seconds (user+sys, /proc/PID/stat) each server process
 * spent per 200 MB GET and per pull: on a small shared machine that is the steadier number.
 * Needs: docker-registry, skopeo, wrk, curl. Everything runs on 127.0.0.1, free ports, temp dirs.
 */
import { ChildProcess } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import { Readable, Transform } from 'stream';
import { pipeline } from 'stream/promises';
import * as zlib from 'zlib';
import { checkDirImage, describeFailure, freePort, Harness, Registry, run, skopeo } from '../test/harness';

// ---------------------------------------------------------------- configuration

const envNum = (name: string, def: number, min: number): number => {
  const v = process.env[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`${name}=${v}: expected a number >= ${min}`);
  return n;
};
const LAYER_MB = envNum('BENCH_LAYER_MB', 200, 1);
const ROUNDS = Math.floor(envNum('BENCH_ROUNDS', 5, 1));
const WRK_SECONDS = Math.floor(envNum('BENCH_WRK_SECONDS', 5, 1));
const N_FIXTURES = Math.floor(envNum('BENCH_FIXTURES', 10000, 1));
const CONNECTIONS = 16;
const WRK_THREADS = 2;
const SMALL_LAYER_BYTES = 2 * 1024 * 1024;
const MiB = 1024 * 1024;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

function findRoot(): string {
  for (let d = __dirname; ; d = path.dirname(d)) {
    const p = path.join(d, 'package.json');
    if (fs.existsSync(p) && (JSON.parse(fs.readFileSync(p, 'utf8')) as { name?: string }).name === 'regtape') return d;
    if (path.dirname(d) === d) throw new Error('bench: cannot find the regtape package root above ' + __dirname);
  }
}
const ROOT = findRoot();
const CLI = path.resolve(process.env.BENCH_REGTAPE_CLI || path.join(ROOT, 'dist', 'cli.js'));

const log = (s: string): void => void process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}\n`);

// ---------------------------------------------------------------- small helpers

const median = (xs: number[]): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const sha256hex = (b: Buffer | string): string => crypto.createHash('sha256').update(b).digest('hex');
const round = (x: number, d = 2): number => (Number.isFinite(x) ? Number(x.toFixed(d)) : x);

/** VmRSS and VmHWM of a process, in MiB (undefined when it is gone). */
function memOf(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
    return { rss: kib('VmRSS') / 1024, hwm: kib('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

/** CPU seconds (user + sys) a process has used so far (/proc/PID/stat fields 14 and 15, in clock ticks). */
const CLK_TCK = 100; // Linux's USER_HZ on every architecture node runs on
function cpuOf(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from 3 on; the name may hold spaces
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Resets the peak RSS (VmHWM) of a process we started (Linux >= 4.0: clear_refs 5). */
function resetPeak(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** Runs fn while tracking the peak RSS of pid: VmHWM reset before, read after, plus VmRSS sampled every 50 ms. */
async function withPeak<T>(pid: number, fn: () => Promise<T>, reset = true): Promise<{ value: T; peakMiB: number; cpuS: number }> {
  if (reset) resetPeak(pid);
  let sampled = memOf(pid)?.rss ?? 0;
  const cpu0 = cpuOf(pid);
  const timer = setInterval(() => {
    const m = memOf(pid);
    if (m && m.rss > sampled) sampled = m.rss;
  }, 50);
  try {
    const value = await fn();
    const m = memOf(pid);
    return { value, peakMiB: Math.max(sampled, m?.hwm ?? 0, m?.rss ?? 0), cpuS: cpuOf(pid) - cpu0 };
  } finally {
    clearInterval(timer);
  }
}

/** GET with node's http client: status, size, sha256 of the body (streamed), and the body when small. */
function fetch(url: string, headers: Record<string, string> = {}): Promise<{ status: number; size: number; sha: string; body?: Buffer; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false }, (res) => {
      const h = crypto.createHash('sha256');
      const keep: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        h.update(c);
        size += c.length;
        if (size <= MiB) keep.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, size, sha: h.digest('hex'), body: size <= MiB ? Buffer.concat(keep) : undefined, headers: res.headers }));
      res.on('error', reject);
    });
    req.setTimeout(60_000, () => req.destroy(new Error(`GET ${url}: timeout`)));
    req.on('error', reject);
  });
}

// ---------------------------------------------------------------- images (streamed: no 200 MB buffers)

function tarHeader(name: string, size: number, type: '0' | '5', mode: number): Buffer {
  const h = Buffer.alloc(512);
  const oct = (v: number, off: number, n: number): void => void h.write(v.toString(8).padStart(n - 1, '0') + '\0', off, n, 'ascii');
  h.write(name, 0, 100, 'utf8');
  oct(mode, 100, 8);
  oct(0, 108, 8);
  oct(0, 116, 8);
  oct(size, 124, 12);
  oct(946684800, 136, 12);
  h.write('        ', 148, 8, 'ascii');
  h.write(type, 156, 1, 'ascii');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  h.write('root', 265, 32, 'ascii');
  h.write('root', 297, 32, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return h;
}

interface BenchImage {
  dir: string;
  ref: string;
  layerDigest: string;
  layerSize: number;
  configDigest: string;
  manifestDigest: string;
  manifestBytes: Buffer;
}

/** An OCI layout with one layer holding `dataBytes` random bytes (tar, gzip level 1), written as a stream. */
async function makeImage(dir: string, dataBytes: number, tag: string): Promise<BenchImage> {
  const blobDir = path.join(dir, 'blobs', 'sha256');
  fs.mkdirSync(blobDir, { recursive: true });
  async function* tarStream(): AsyncGenerator<Buffer> {
    yield tarHeader('data/', 0, '5', 0o755);
    yield tarHeader('data/blob.bin', dataBytes, '0', 0o644);
    for (let left = dataBytes; left > 0; ) {
      const n = Math.min(left, MiB);
      yield crypto.randomBytes(n);
      left -= n;
    }
    const pad = (512 - (dataBytes % 512)) % 512;
    if (pad) yield Buffer.alloc(pad);
    const hello = Buffer.from(`hello ${tag}\n`);
    yield tarHeader('hello.txt', hello.length, '0', 0o644);
    yield Buffer.concat([hello, Buffer.alloc(512 - hello.length)]);
    yield Buffer.alloc(1024);
  }
  const tap = (h: crypto.Hash, count: { n: number }): Transform =>
    new Transform({
      transform(c: Buffer, _e, cb): void {
        h.update(c);
        count.n += c.length;
        cb(null, c);
      },
    });
  const diffHash = crypto.createHash('sha256');
  const gzHash = crypto.createHash('sha256');
  const tarCount = { n: 0 };
  const gzCount = { n: 0 };
  const tmp = path.join(dir, 'layer.tmp');
  await pipeline(Readable.from(tarStream()), tap(diffHash, tarCount), zlib.createGzip({ level: 1 }), tap(gzHash, gzCount), fs.createWriteStream(tmp));
  const layerHex = gzHash.digest('hex');
  fs.renameSync(tmp, path.join(blobDir, layerHex));
  const write = (b: Buffer): string => {
    const hex = sha256hex(b);
    fs.writeFileSync(path.join(blobDir, hex), b);
    return `sha256:${hex}`;
  };
  const config = Buffer.from(
    JSON.stringify({
      created: '2000-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: [`sha256:${diffHash.digest('hex')}`] },
      history: [{ created: '2000-01-01T00:00:00Z', created_by: `regtape bench ${tag}` }],
    }),
  );
  const configDigest = write(config);
  const layerDigest = `sha256:${layerHex}`;
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: gzCount.n }],
    }),
  );
  const manifestDigest = write(manifestBytes);
  fs.writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  fs.writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: OCI_MANIFEST, digest: manifestDigest, size: manifestBytes.length, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return { dir, ref: `oci:${dir}:${tag}`, layerDigest, layerSize: gzCount.n, configDigest, manifestDigest, manifestBytes };
}

// ---------------------------------------------------------------- regtape processes (the CLI)

interface Tape {
  name: string;
  pid: number;
  port: number;
  host: string;
  url: string;
  /** spawn to the listening line on stdout */
  startMs: number;
  line: string;
  child: ChildProcess;
}

let tapeSeq = 0;

/** Starts `node dist/cli.js <args> --port <free>` and waits for its one stdout line. */
async function startRegtape(h: Harness, kind: string, args: string[]): Promise<Tape> {
  for (let attempt = 1; ; attempt++) {
    const name = `${kind}-${++tapeSeq}`;
    const port = await freePort();
    const t0 = process.hrtime.bigint();
    const child = h.procs.spawn(name, process.execPath, [CLI, ...args, '--port', String(port)], { cwd: ROOT });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let buf = '';
        const done = (): void => {
          clearTimeout(timer);
          child.stdout?.off('data', onData);
          child.off('exit', onExit);
        };
        const onData = (c: Buffer): void => {
          buf += c.toString('utf8');
          const i = buf.indexOf('\n');
          if (i >= 0) {
            done();
            resolve(buf.slice(0, i));
          }
        };
        const onExit = (): void => {
          done();
          setTimeout(() => reject(h.procs.exitError(name) ?? new Error(`${name} exited`)), 50);
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`${name}: no listening line within 60 s\n${h.procs.logs(name)}`));
        }, 60_000);
        child.stdout?.on('data', onData);
        child.once('exit', onExit);
      });
      const startMs = Number(process.hrtime.bigint() - t0) / 1e6;
      const host = `127.0.0.1:${port}`;
      return { name, pid: child.pid ?? -1, port, host, url: `http://${host}`, startMs, line, child };
    } catch (e) {
      await h.procs.stop(name);
      if (attempt < 3 && /already in use/.test(String(e))) continue;
      throw e;
    }
  }
}

// ---------------------------------------------------------------- load generators

interface WrkResult {
  rps: number;
  mibps: number;
  requests: number;
  non2xx: number;
  socketErrors: number;
}

async function wrk(url: string, headers: string[], seconds: number): Promise<WrkResult> {
  const args = [`-t${WRK_THREADS}`, `-c${CONNECTIONS}`, `-d${seconds}s`, '--timeout', '10s'];
  for (const hd of headers) args.push('-H', hd);
  args.push(url);
  const r = await run('wrk', args, { timeoutMs: (seconds + 30) * 1000 });
  if (r.code !== 0) throw new Error(`wrk failed: ${describeFailure(r)}`);
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const tm = /Transfer\/sec:\s+([\d.]+)(B|KB|MB|GB)/.exec(out);
  const unit = { B: 1 / MiB, KB: 1 / 1024, MB: 1, GB: 1024 } as Record<string, number>;
  const mibps = tm ? Number(tm[1]) * unit[tm[2]] : NaN;
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = se ? se.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  if (!Number.isFinite(rps)) throw new Error(`cannot read wrk output:\n${out}`);
  return { rps, mibps, requests, non2xx, socketErrors };
}

/** One GET with curl into /dev/null: MiB/s over the whole request. */
async function curlGet(url: string, expectSize: number): Promise<number> {
  const r = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}', url], { timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`curl failed: ${describeFailure(r)}`);
  const [code, size, secs] = r.stdout.trim().split(' ');
  if (code !== '200' || Number(size) !== expectSize) throw new Error(`GET ${url}: HTTP ${code}, ${size} bytes (expected 200, ${expectSize})`);
  return Number(size) / MiB / Number(secs);
}

/** skopeo copy docker://HOST/REPO:v1 dir:TMP, timed; the output dir is checked (first time) and removed. */
async function timedPull(h: Harness, host: string, repo: string, verify: boolean): Promise<number> {
  const dir = h.tempDir('pull');
  try {
    const t0 = process.hrtime.bigint();
    const r = await skopeo(['copy', '-q', '--src-tls-verify=false', `docker://${host}/${repo}:v1`, `dir:${dir}`], { timeoutMs: 600_000 });
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    if (r.code !== 0) throw new Error(`pull from ${host} failed: ${describeFailure(r)}`);
    if (verify) checkDirImage(dir);
    return secs;
  } finally {
    h.tmp.remove(dir);
  }
}

// ---------------------------------------------------------------- results

type Dir = 'ge' | 'gt' | 'le' | 'lt';
interface Metric {
  id: string;
  metric: string;
  unit: string;
  registry: number | null;
  regtape: number | null;
  ratio: number | null;
  /** human text */
  target: string;
  /** machine form: what is compared (the ratio or the regtape value) */
  check?: { on: 'ratio' | 'regtape'; dir: Dir; value: number };
  pass: boolean | null;
  samples: { registry?: number[]; regtape?: number[] };
  note?: string;
}

function metric(
  id: string,
  name: string,
  unit: string,
  registry: number[] | undefined,
  regtape: number[] | undefined,
  target: string,
  check?: Metric['check'],
  note?: string,
): Metric {
  const r = registry?.length ? median(registry) : null;
  const t = regtape?.length ? median(regtape) : null;
  const ratio = r !== null && t !== null && r !== 0 ? t / r : null;
  let pass: boolean | null = null;
  if (check) {
    const v = check.on === 'ratio' ? ratio : t;
    if (v !== null) pass = check.dir === 'ge' ? v >= check.value : check.dir === 'gt' ? v > check.value : check.dir === 'le' ? v <= check.value : v < check.value;
  }
  return {
    id,
    metric: name,
    unit,
    registry: r === null ? null : round(r, 3),
    regtape: t === null ? null : round(t, 3),
    ratio: ratio === null ? null : round(ratio, 3),
    target,
    check,
    pass,
    samples: { registry: registry?.map((x) => round(x, 3)), regtape: regtape?.map((x) => round(x, 3)) },
    note,
  };
}

function table(metrics: Metric[]): string {
  const fmt = (v: number | null): string => (v === null ? '-' : Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2));
  const rows = [['metric', 'registry', 'regtape', 'ratio', 'target', 'ok']];
  for (const m of metrics) {
    rows.push([`${m.metric} (${m.unit})`, fmt(m.registry), fmt(m.regtape), m.ratio === null ? '-' : `${m.ratio.toFixed(2)}x`, m.target, m.pass === null ? '' : m.pass ? 'yes' : 'NO']);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 || i === 4 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  return [line(rows[0]), w.map((n) => '-'.repeat(n)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

// ---------------------------------------------------------------- the run

async function main(): Promise<void> {
  const began = Date.now();
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npx tsc -p tsconfig.build.json\` first (npm run bench does)`);
  for (const bin of ['wrk', 'curl', 'skopeo', 'docker-registry']) {
    const r = await run('sh', ['-c', `command -v ${bin}`]);
    if (r.code !== 0) throw new Error(`bench needs ${bin} on PATH${bin === 'wrk' ? ' (apt-get install -y wrk)' : ''}`);
  }
  const h = new Harness();
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => (cleaning ??= h.cleanup().catch((e: Error) => log(`cleanup: ${e.message}`)));
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      log(`${sig}: stopping what the bench started and removing its temp dirs`);
      void cleanup().then(() => process.exit(130));
    });
  }
  try {
    await bench(h, began);
  } finally {
    await cleanup();
  }
}

async function bench(h: Harness, began: number): Promise<void> {
  const loadStart = os.loadavg().map((x) => round(x, 2));
  if (loadStart[0] > 1) log(`note: load average ${loadStart.join(' ')} before the start: other work shares the CPUs, numbers will be noisier`);
  // ---- 1. set-up
  log(`set-up: docker-registry, images of ${LAYER_MB} MiB and 2 MiB, ${ROUNDS} rounds, wrk ${WRK_SECONDS}s x${CONNECTIONS}`);
  const reg: Registry = await h.startRegistry({ mode: 'plain', logLevel: 'error' });
  const t0 = Date.now();
  const bigDir = h.tempDir('img-big');
  const smallDir = h.tempDir('img-small');
  const [big, small] = await Promise.all([makeImage(bigDir, LAYER_MB * MiB, 'v1'), makeImage(smallDir, SMALL_LAYER_BYTES, 'v1')]);
  log(`images made in ${((Date.now() - t0) / 1000).toFixed(1)} s: big layer ${big.layerSize} B, small layer ${small.layerSize} B`);
  for (const [img, repo] of [
    [big, 'test/big'],
    [small, 'test/small'],
  ] as const) {
    const r = await skopeo(['copy', '-q', '--dest-tls-verify=false', img.ref, `docker://${reg.host}/${repo}:v1`], { timeoutMs: 600_000 });
    if (r.code !== 0) throw new Error(`push ${repo} failed: ${describeFailure(r)}`);
  }
  h.tmp.remove(bigDir);
  h.tmp.remove(smallDir);

  const recDir = h.tempDir('recorded');
  const rec0 = await startRegtape(h, 'record', ['record', '--upstream', reg.url, '--out', recDir]);
  for (const repo of ['test/big', 'test/small']) await timedPull(h, rec0.host, repo, true);
  await h.procs.stop(rec0.name);
  const fixtures = fs.readdirSync(recDir).filter((f) => f.endsWith('.md'));
  log(`recorded ${fixtures.length} fixtures: ${fixtures.join(' ')}`);

  const rep = await startRegtape(h, 'replay', ['replay', recDir, '--quiet']);
  log(`replay: ${rep.line} (start ${rep.startMs.toFixed(0)} ms)`);

  const servers = { registry: { host: reg.host, url: reg.url, pid: reg.pid }, regtape: { host: rep.host, url: rep.url, pid: rep.pid } };
  type Side = keyof typeof servers;
  const bigBlob = (s: Side): string => `${servers[s].url}/v2/test/big/blobs/${big.layerDigest}`;
  const smallBlob = (s: Side): string => `${servers[s].url}/v2/test/small/blobs/${small.layerDigest}`;
  const manifestUrl = (s: Side): string => `${servers[s].url}/v2/test/small/manifests/v1`;

  // sanity: both serve the same bytes for every URL we load
  for (const s of ['registry', 'regtape'] as Side[]) {
    const b = await fetch(bigBlob(s));
    if (b.status !== 200 || `sha256:${b.sha}` !== big.layerDigest) throw new Error(`${s}: big blob GET gave ${b.status}, sha256:${b.sha}`);
    const sm = await fetch(smallBlob(s));
    if (sm.status !== 200 || `sha256:${sm.sha}` !== small.layerDigest) throw new Error(`${s}: small blob GET gave ${sm.status}, sha256:${sm.sha}`);
    const m = await fetch(manifestUrl(s), { accept: OCI_MANIFEST });
    if (m.status !== 200 || `sha256:${m.sha}` !== small.manifestDigest) throw new Error(`${s}: manifest GET gave ${m.status}, sha256:${m.sha}`);
  }
  log('sanity: registry and replay serve identical bytes; warming up');
  for (const s of ['registry', 'regtape'] as Side[]) {
    await wrk(smallBlob(s), [], 1);
    await wrk(manifestUrl(s), [`Accept: ${OCI_MANIFEST}`], 1);
  }

  const S = {
    blobBig: { registry: [] as number[], regtape: [] as number[] },
    blobBigCpu: { registry: [] as number[], regtape: [] as number[] },
    blobSmallRps: { registry: [] as number[], regtape: [] as number[] },
    blobSmallMiB: { registry: [] as number[], regtape: [] as number[] },
    blobSmallRss: { registry: [] as number[], regtape: [] as number[] },
    manifestRps: { registry: [] as number[], regtape: [] as number[] },
    manifestRss: { registry: [] as number[], regtape: [] as number[] },
    pullDirect: [] as number[],
    pullReplay: [] as number[],
    pullRecord: [] as number[],
    pullDirectRss: [] as number[],
    pullReplayRss: [] as number[],
    pullRecordRss: [] as number[],
    pullDirectCpu: [] as number[],
    pullReplayCpu: [] as number[],
    pullRecordCpu: [] as number[],
    recordStartMs: [] as number[],
  };
  const errors: string[] = [];
  const checkWrk = (what: string, r: WrkResult): void => {
    if (r.non2xx || r.socketErrors) errors.push(`${what}: ${r.non2xx} non-2xx, ${r.socketErrors} socket errors`);
  };

  for (let i = 0; i < ROUNDS; i++) {
    const order: Side[] = i % 2 === 0 ? ['registry', 'regtape'] : ['regtape', 'registry'];
    log(`round ${i + 1}/${ROUNDS}: ${order.join(' then ')}`);
    // 2. 200 MB blob GET throughput (curl -> /dev/null), two GETs each
    for (const s of order) {
      for (let k = 0; k < 2; k++) {
        const { value, cpuS } = await withPeak(servers[s].pid, () => curlGet(bigBlob(s), big.layerSize));
        S.blobBig[s].push(value);
        S.blobBigCpu[s].push(cpuS);
      }
    }
    // 3. 2 MB blobs, 16 connections
    for (const s of order) {
      const { value, peakMiB } = await withPeak(servers[s].pid, () => wrk(smallBlob(s), [], WRK_SECONDS));
      checkWrk(`2MB blob ${s}`, value);
      S.blobSmallRps[s].push(value.rps);
      S.blobSmallMiB[s].push(value.mibps);
      S.blobSmallRss[s].push(peakMiB);
    }
    // 4. manifest GETs, 16 connections
    for (const s of order) {
      const { value, peakMiB } = await withPeak(servers[s].pid, () => wrk(manifestUrl(s), [`Accept: ${OCI_MANIFEST}`], WRK_SECONDS));
      checkWrk(`manifest ${s}`, value);
      S.manifestRps[s].push(value.rps);
      S.manifestRss[s].push(peakMiB);
    }
    // 5. full pulls: direct, from replay, through a fresh recorder (rotating order)
    const pulls = ['direct', 'replay', 'record'];
    const rot = [...pulls.slice(i % 3), ...pulls.slice(0, i % 3)];
    for (const p of rot) {
      const verify = i === 0;
      if (p === 'direct') {
        const { value, peakMiB, cpuS } = await withPeak(reg.pid, () => timedPull(h, reg.host, 'test/big', verify));
        S.pullDirect.push(value);
        S.pullDirectRss.push(peakMiB);
        S.pullDirectCpu.push(cpuS);
      } else if (p === 'replay') {
        const { value, peakMiB, cpuS } = await withPeak(rep.pid, () => timedPull(h, rep.host, 'test/big', verify));
        S.pullReplay.push(value);
        S.pullReplayRss.push(peakMiB);
        S.pullReplayCpu.push(cpuS);
      } else {
        const out = h.tempDir(`record-round${i + 1}`);
        const rec = await startRegtape(h, 'record', ['record', '--upstream', reg.url, '--out', out]);
        S.recordStartMs.push(rec.startMs);
        // not reset: the recorder's peak over its whole life (start-up included)
        const { value, peakMiB, cpuS } = await withPeak(rec.pid, () => timedPull(h, rec.host, 'test/big', verify), false);
        S.pullRecord.push(value);
        S.pullRecordRss.push(peakMiB);
        S.pullRecordCpu.push(cpuS);
        await h.procs.stop(rec.name);
        if (verify) {
          const stored = path.join(out, 'bodies', 'sha256', big.layerDigest.slice('sha256:'.length));
          const size = fs.existsSync(stored) ? fs.statSync(stored).size : -1;
          if (size !== big.layerSize) throw new Error(`record round ${i + 1}: stored layer has ${size} bytes, expected ${big.layerSize}`);
        }
        h.tmp.remove(out);
      }
    }
    log(
      `  ${LAYER_MB}MiB GET MiB/s reg ${S.blobBig.registry.slice(-2).map((x) => x.toFixed(0))} tape ${S.blobBig.regtape.slice(-2).map((x) => x.toFixed(0))}; ` +
        `2MB rps reg ${S.blobSmallRps.registry.at(-1)?.toFixed(0)} tape ${S.blobSmallRps.regtape.at(-1)?.toFixed(0)}; ` +
        `manifest rps reg ${S.manifestRps.registry.at(-1)?.toFixed(0)} tape ${S.manifestRps.regtape.at(-1)?.toFixed(0)}; ` +
        `pull s direct ${S.pullDirect.at(-1)?.toFixed(2)} replay ${S.pullReplay.at(-1)?.toFixed(2)} record ${S.pullRecord.at(-1)?.toFixed(2)}`,
    );
  }
  const replayIdle = memOf(rep.pid);
  await h.procs.stop(rep.name);

  // ---- 6. replay start-up with N generated fixtures
  const manifestFixture = fixtures.find((f) => f.startsWith('GET_test_small_manifests_v1.'));
  if (!manifestFixture) throw new Error(`no recorded manifest fixture for test/small:v1 among ${fixtures.join(' ')}`);
  const template = fs.readFileSync(path.join(recDir, manifestFixture), 'utf8');
  const needle = '/v2/test/small/manifests/v1';
  if (!template.includes(`url ${needle}`)) throw new Error(`${manifestFixture} has no 'url ${needle}' line`);
  const genDir = h.tempDir('fixtures10k');
  const tg0 = Date.now();
  let lastTag = '';
  for (let k = 0; k < N_FIXTURES; k++) {
    const tag = `gen-${String(k).padStart(5, '0')}`;
    lastTag = tag;
    const text = template.split(needle).join(`/v2/test/small/manifests/${tag}`);
    const hash = sha256hex(`GET /v2/test/small/manifests/${tag}`).slice(0, 8);
    fs.writeFileSync(path.join(genDir, `GET_test_small_manifests_${tag}.${hash}.md`), text);
  }
  log(`generated ${N_FIXTURES} fixtures (${manifestFixture} with varied tags) in ${Date.now() - tg0} ms; measuring start-up`);
  const startBig: number[] = [];
  const startBigRss: number[] = [];
  const startSmall: number[] = [];
  const startSmallRss: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    for (const which of i % 2 === 0 ? ['gen', 'rec'] : ['rec', 'gen']) {
      const t = await startRegtape(h, 'replay-start', ['replay', which === 'gen' ? genDir : recDir, '--quiet']);
      const m = memOf(t.pid);
      if (which === 'gen') {
        const m0 = /replaying (\d+) exchanges/.exec(t.line);
        if (!m0 || Number(m0[1]) !== N_FIXTURES) throw new Error(`replay of ${N_FIXTURES} fixtures said: ${t.line}`);
        const r = await fetch(`${t.url}/v2/test/small/manifests/${lastTag}`, { accept: OCI_MANIFEST });
        if (r.status !== 200 || `sha256:${r.sha}` !== small.manifestDigest) throw new Error(`generated fixture ${lastTag}: HTTP ${r.status}`);
        startBig.push(t.startMs);
        startBigRss.push(m?.rss ?? NaN);
      } else {
        startSmall.push(t.startMs);
        startSmallRss.push(m?.rss ?? NaN);
      }
      await h.procs.stop(t.name);
    }
  }
  h.tmp.remove(genDir);

  // ---- results
  const metrics: Metric[] = [
    metric('blob_200mb_get', `${LAYER_MB} MiB blob GET throughput`, 'MiB/s', S.blobBig.registry, S.blobBig.regtape, 'ratio >= 1.0', { on: 'ratio', dir: 'ge', value: 1 }),
    metric('blob_200mb_get_cpu', `server CPU per ${LAYER_MB} MiB GET`, 'cpu s', S.blobBigCpu.registry, S.blobBigCpu.regtape, '(info)'),
    metric('blob_2mb_x16_rps', '2 MiB blob GETs x16 conns', 'req/s', S.blobSmallRps.registry, S.blobSmallRps.regtape, 'ratio > 4.4', { on: 'ratio', dir: 'gt', value: 4.4 }),
    metric('blob_2mb_x16_mibps', '2 MiB blob GETs x16 conns', 'MiB/s', S.blobSmallMiB.registry, S.blobSmallMiB.regtape, '(info)'),
    metric('blob_2mb_x16_peak_rss', 'server peak RSS during 2 MiB x16', 'MiB', S.blobSmallRss.registry, S.blobSmallRss.regtape, 'regtape < 200', { on: 'regtape', dir: 'lt', value: 200 }),
    metric('manifest_x16_rps', 'manifest GETs x16 conns', 'req/s', S.manifestRps.registry, S.manifestRps.regtape, 'ratio >= 10', { on: 'ratio', dir: 'ge', value: 10 }),
    metric('manifest_x16_peak_rss', 'server peak RSS during manifest x16', 'MiB', S.manifestRss.registry, S.manifestRss.regtape, '(info)'),
    metric('pull_replay_s', `skopeo pull ${LAYER_MB} MiB image, direct vs replay`, 's', S.pullDirect, S.pullReplay, 'ratio <= 1.0', { on: 'ratio', dir: 'le', value: 1 }),
    metric('pull_replay_peak_rss', 'server peak RSS during that pull', 'MiB', S.pullDirectRss, S.pullReplayRss, '(info)'),
    metric('pull_replay_cpu', 'server CPU during that pull', 'cpu s', S.pullDirectCpu, S.pullReplayCpu, '(info)'),
    metric('pull_record_s', `skopeo pull ${LAYER_MB} MiB image, direct vs via record`, 's', S.pullDirect, S.pullRecord, 'ratio <= 1.2', { on: 'ratio', dir: 'le', value: 1.2 }),
    metric('pull_record_peak_rss', 'recorder peak RSS during that pull', 'MiB', undefined, S.pullRecordRss, 'regtape < 150', { on: 'regtape', dir: 'lt', value: 150 }),
    metric('pull_record_cpu', 'server CPU during that pull (registry: direct pull)', 'cpu s', S.pullDirectCpu, S.pullRecordCpu, '(info)', undefined, 'the registry also serves the recorder, using about as much CPU as in the direct pull'),
    metric('replay_start_10k_s', `replay start-up, ${N_FIXTURES} fixtures`, 's', undefined, startBig.map((x) => x / 1000), 'regtape < 1', { on: 'regtape', dir: 'lt', value: 1 }),
    metric('replay_start_10k_rss', `replay RSS after start, ${N_FIXTURES} fixtures`, 'MiB', undefined, startBigRss, '(info)'),
    metric('replay_start_small_s', `replay start-up, ${fixtures.length} fixtures (reference)`, 's', undefined, startSmall.map((x) => x / 1000), '(info)'),
    metric('replay_start_small_rss', `replay RSS after start, ${fixtures.length} fixtures`, 'MiB', undefined, startSmallRss, '(info)'),
    metric('record_start_s', 'record start-up (reference)', 's', undefined, S.recordStartMs.map((x) => x / 1000), '(info)'),
  ];
  const tableText = table(metrics);
  process.stdout.write(`\n${tableText}\n\n`);
  const missed = metrics.filter((m) => m.pass === false);
  process.stdout.write(missed.length ? `targets missed: ${missed.map((m) => m.id).join(', ')}\n` : 'all targets met\n');
  if (errors.length) process.stdout.write(`load errors: ${errors.join('; ')}\n`);

  const git = await run('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']);
  const dirty = await run('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src']);
  const result = {
    when: new Date().toISOString(),
    durationS: round((Date.now() - began) / 1000, 1),
    env: {
      node: process.version,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memGiB: round(os.totalmem() / 2 ** 30, 1),
      kernel: os.release(),
      git: git.stdout.trim(),
      srcDirty: dirty.stdout.trim() !== '',
      cli: CLI,
      loadavgStart: loadStart,
      loadavgEnd: os.loadavg().map((x) => round(x, 2)),
    },
    config: {
      layerMiB: LAYER_MB,
      bigLayerBytes: big.layerSize,
      smallLayerBytes: small.layerSize,
      rounds: ROUNDS,
      wrk: { threads: WRK_THREADS, connections: CONNECTIONS, seconds: WRK_SECONDS, keepAlive: true },
      fixtures: N_FIXTURES,
      recordedFixtures: fixtures.length,
      replayIdleAfterLoadMiB: replayIdle ? round(replayIdle.rss, 1) : null,
      replayPeakWholeRunMiB: replayIdle ? round(replayIdle.hwm, 1) : null,
    },
    metrics,
    missed: missed.map((m) => m.id),
    loadErrors: errors,
    table: tableText.split('\n'),
  };
  const resDir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(resDir, { recursive: true });
  const json = JSON.stringify(result, null, 2) + '\n';
  fs.writeFileSync(path.join(resDir, 'latest.json'), json);
  fs.writeFileSync(path.join(resDir, `${result.when.replace(/[:.]/g, '-')}.json`), json);
  log(`done in ${result.durationS} s; results in ${path.relative(process.cwd(), resDir)}/latest.json`);
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`bench failed: ${e.stack ?? e}\n`);
    process.exit(1);
  },
);
