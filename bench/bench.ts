/**
 * regtape benchmark: the plain docker-registry, talkback 4 and a bare node:http server against
 * `regtape replay` (and `regtape record`) on loopback.
 *
 *   npm run bench            (builds dist/, compiles bench/ to node_modules/.cache/regtape-bench, runs it)
 *
 * One run: set up a registry with a BENCH_LAYER_MB (default 200) MiB one-layer image and a 2 MiB one,
 * record both with skopeo pulls through `regtape record`; record the manifest and 2 MiB blob GETs with
 * talkback (bench/peers.ts; it cannot record the 200 MB layer); start a bare node:http server that sends
 * regtape's own manifest answer (same status, headers, bytes) and nothing else: the ceiling for Node here.
 * Then ROUNDS rounds, the order of the servers rotating each round: 200 MB blob GET throughput (curl),
 * 2 MB blob GETs and manifest GETs with 16 connections (wrk), full skopeo pulls (direct, from replay,
 * through a fresh recorder), and replay start-up with 10,000 generated fixtures. Every server runs as its
 * own process, so RSS and CPU are per process (VmHWM after clear_refs, plus 50 ms VmRSS sampling; CPU
 * from /proc/PID/stat). Ratios are medians of per-round ratios (regtape over each peer in the same round).
 * Prints a table and writes bench/results/latest.json plus a timestamped copy.
 *
 * env: BENCH_LAYER_MB (200), BENCH_ROUNDS (5), BENCH_WRK_SECONDS (5), BENCH_FIXTURES (10000),
 *      BENCH_REGTAPE_CLI (default <repo>/dist/cli.js: another build's cli.js, for A/B runs),
 *      REGTAPE_KEEP=1 keeps the temp dirs (for their logs).
 * Besides wall-clock numbers it reports the CPU each server process spent per request and per pull:
 * on a small shared machine that is the steadier number.
 * Needs: docker-registry, skopeo, wrk, curl (scripts/install-test-deps.sh), and the devDependencies (npm ci).
 * Everything runs on 127.0.0.1, free ports, temp dirs.
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

// ---------------------------------------------------------------- server processes (regtape's CLI and the peers)

interface Tape {
  name: string;
  pid: number;
  port: number;
  host: string;
  url: string;
  /** spawn to the listening line on stdout */
  startMs: number;
  /** CPU seconds the process had used when it printed that line */
  startCpuS: number;
  line: string;
  child: ChildProcess;
}

let tapeSeq = 0;

/** Starts `node <script> ...args(port)` on a free port and waits for its first stdout line. */
async function startNode(h: Harness, kind: string, script: string, args: (port: number) => string[]): Promise<Tape> {
  for (let attempt = 1; ; attempt++) {
    const name = `${kind}-${++tapeSeq}`;
    const port = await freePort();
    const t0 = process.hrtime.bigint();
    const child = h.procs.spawn(name, process.execPath, [script, ...args(port)], { cwd: ROOT });
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
      const startCpuS = cpuOf(child.pid ?? -1);
      const host = `127.0.0.1:${port}`;
      return { name, pid: child.pid ?? -1, port, host, url: `http://${host}`, startMs, startCpuS, line, child };
    } catch (e) {
      await h.procs.stop(name);
      if (attempt < 3 && /already in use|EADDRINUSE/.test(String(e))) continue;
      throw e;
    }
  }
}

/** `node dist/cli.js <args> --port <free>`. */
const startRegtape = (h: Harness, kind: string, args: string[]): Promise<Tape> => startNode(h, kind, CLI, (port) => [...args, '--port', String(port)]);

/** The peers (bench/peers.ts, compiled next to this file): talkback 4, and a bare node:http server. */
const PEERS = path.join(__dirname, 'peers.js');

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

/** The servers compared. `bare`: a node:http server sending one recorded answer and doing nothing else. */
const SIDES = ['registry', 'regtape', 'talkback', 'bare'] as const;
type Side = (typeof SIDES)[number];
type Samples = Partial<Record<Side, number[]>>;

type Dir = 'ge' | 'gt' | 'le' | 'lt';
/** A target: regtape's value, or its ratio to a peer, compared with a number. */
interface Check {
  on: 'regtape' | `x${Side}`;
  dir: Dir;
  value: number;
  pass: boolean | null;
}
interface Metric {
  id: string;
  metric: string;
  unit: string;
  /** medians */
  registry: number | null;
  regtape: number | null;
  talkback: number | null;
  bare: number | null;
  /** regtape over the registry: the median of per-round ratios (same rounds), else the ratio of medians */
  ratio: number | null;
  /** regtape over each peer, the same way */
  ratios: Partial<Record<Side, number>>;
  /** human text */
  target: string;
  checks: Check[];
  pass: boolean | null;
  samples: Samples;
  note?: string;
}

const DIR_TEXT: Record<Dir, string> = { ge: '>=', gt: '>', le: '<=', lt: '<' };

/** A check written as 'x bare >= 0.85', 'x registry <= 1.3' or 'regtape < 150'. */
function parseCheck(text: string): Omit<Check, 'pass'> {
  const m = /^(regtape|x (registry|talkback|bare)) (>=|>|<=|<) ([\d.]+)$/.exec(text);
  if (!m) throw new Error(`bench: bad target ${text}`);
  const dir = (Object.keys(DIR_TEXT) as Dir[]).find((d) => DIR_TEXT[d] === m[3])!;
  return { on: m[2] ? (`x${m[2]}` as Check['on']) : 'regtape', dir, value: Number(m[4]) };
}

function metric(id: string, name: string, unit: string, samples: Samples, targets: string[] = [], note?: string): Metric {
  const med = (s: Side): number | null => (samples[s]?.length ? median(samples[s]!) : null);
  const t = med('regtape');
  const ratios: Partial<Record<Side, number>> = {};
  for (const s of SIDES) {
    const a = samples.regtape;
    const b = samples[s];
    if (s === 'regtape' || !a?.length || !b?.length) continue;
    // Rounds alternate the servers; a ratio within one round cancels most of a shared machine's drift.
    const r = a.length === b.length ? median(a.map((x, i) => x / b[i])) : (t ?? NaN) / median(b);
    if (Number.isFinite(r)) ratios[s] = round(r, 3);
  }
  const checks: Check[] = targets.map((text) => {
    const c = parseCheck(text);
    const v = c.on === 'regtape' ? t : ratios[c.on.slice(1) as Side] ?? null;
    const pass = v === null ? null : c.dir === 'ge' ? v >= c.value : c.dir === 'gt' ? v > c.value : c.dir === 'le' ? v <= c.value : v < c.value;
    return { ...c, pass };
  });
  const r3 = (v: number | null): number | null => (v === null ? null : round(v, 3));
  return {
    id,
    metric: name,
    unit,
    registry: r3(med('registry')),
    regtape: r3(t),
    talkback: r3(med('talkback')),
    bare: r3(med('bare')),
    ratio: ratios.registry ?? null,
    ratios,
    target: targets.length ? targets.join(', ') : '(info)',
    checks,
    pass: checks.length === 0 ? null : checks.some((c) => c.pass === false) ? false : checks.every((c) => c.pass) ? true : null,
    samples: Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, v!.map((x) => round(x, 3))])),
    note,
  };
}

function table(metrics: Metric[]): string {
  const fmt = (v: number | null | undefined): string => (v === null || v === undefined ? '-' : Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2));
  const x = (v: number | undefined): string => (v === undefined ? '-' : `${v.toFixed(2)}x`);
  const rows = [['metric', 'registry', 'talkback', 'bare node', 'regtape', 'x registry', 'x talkback', 'x bare', 'target', 'ok']];
  for (const m of metrics) {
    rows.push([
      `${m.metric} (${m.unit})`,
      fmt(m.registry),
      fmt(m.talkback),
      fmt(m.bare),
      fmt(m.regtape),
      x(m.ratios.registry),
      x(m.ratios.talkback),
      x(m.ratios.bare),
      m.target,
      m.pass === null ? '' : m.pass ? 'yes' : 'NO',
    ]);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 || i === 8 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ').trimEnd();
  return [line(rows[0]), w.map((n) => '-'.repeat(n)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

/** Rotates a list by i: each server goes first in turn. */
const rotate = <T>(xs: readonly T[], i: number): T[] => [...xs.slice(i % xs.length), ...xs.slice(0, i % xs.length)];

// ---------------------------------------------------------------- the run

async function main(): Promise<void> {
  const began = Date.now();
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npx tsc -p tsconfig.build.json\` first (npm run bench does)`);
  for (const bin of ['wrk', 'curl', 'skopeo', 'docker-registry']) {
    const r = await run('sh', ['-c', `command -v ${bin}`]);
    if (r.code !== 0) throw new Error(`bench needs ${bin} on PATH${bin === 'wrk' ? ' (apt-get install -y wrk, or scripts/install-test-deps.sh)' : ''}`);
  }
  try {
    require.resolve('talkback');
  } catch {
    throw new Error('bench needs the talkback devDependency: run `npm ci` (not `npm ci --omit=dev`)');
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

/** GET through a recorder with exactly the headers wrk sends (Host, and Accept when given): talkback matches on all of them. */
async function curlExact(url: string, accept?: string): Promise<void> {
  const r = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-H', 'User-Agent:', '-H', accept ? `Accept: ${accept}` : 'Accept:', url], { timeoutMs: 120_000 });
  if (r.code !== 0 || r.stdout.trim() !== '200') throw new Error(`GET ${url} gave ${r.stdout.trim()}: ${describeFailure(r)}`);
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

  // talkback records exactly what the load sends (it cannot record the 200 MB layer: notes in README), then replays it.
  const tapes = h.tempDir('talkback-tapes');
  const tbRec = await startNode(h, 'talkback-record', PEERS, (port) => ['talkback', 'record', reg.url, String(port), tapes]);
  await curlExact(`${tbRec.url}/v2/test/small/manifests/v1`, OCI_MANIFEST);
  await curlExact(`${tbRec.url}/v2/test/small/blobs/${small.layerDigest}`);
  await h.procs.stop(tbRec.name);
  const tb = await startNode(h, 'talkback', PEERS, (port) => ['talkback', 'replay', reg.url, String(port), tapes]);
  log(`talkback: ${fs.readdirSync(tapes).length} tapes; ${tb.line}`);

  const urls = {
    bigBlob: (u: string): string => `${u}/v2/test/big/blobs/${big.layerDigest}`,
    smallBlob: (u: string): string => `${u}/v2/test/small/blobs/${small.layerDigest}`,
    manifest: (u: string): string => `${u}/v2/test/small/manifests/v1`,
  };
  // The bare server sends regtape's own answer to the manifest GET: the same status, headers and bytes.
  const answer = await fetch(urls.manifest(rep.url), { accept: OCI_MANIFEST });
  const answerHeaders: string[] = [];
  const rawRes = await new Promise<http.IncomingMessage>((resolve, reject) =>
    http.get(urls.manifest(rep.url), { headers: { accept: OCI_MANIFEST }, agent: false }, resolve).on('error', reject),
  );
  rawRes.resume();
  for (let i = 0; i < rawRes.rawHeaders.length; i += 2) {
    if (!/^(connection|keep-alive|transfer-encoding)$/i.test(rawRes.rawHeaders[i])) answerHeaders.push(rawRes.rawHeaders[i], rawRes.rawHeaders[i + 1]);
  }
  const answerFile = path.join(h.tempDir('bare'), 'answer.json');
  fs.writeFileSync(answerFile, JSON.stringify({ status: answer.status, headers: answerHeaders, body: answer.body!.toString('base64') }));
  const bare = await startNode(h, 'bare', PEERS, (port) => ['bare', String(port), answerFile]);

  const servers: Record<Side, { url: string; pid: number }> = {
    registry: { url: reg.url, pid: reg.pid },
    regtape: { url: rep.url, pid: rep.pid },
    talkback: { url: tb.url, pid: tb.pid },
    bare: { url: bare.url, pid: bare.pid },
  };

  // sanity: every server serves the right bytes for every URL we load
  for (const s of ['registry', 'regtape'] as Side[]) {
    const b = await fetch(urls.bigBlob(servers[s].url));
    if (b.status !== 200 || `sha256:${b.sha}` !== big.layerDigest) throw new Error(`${s}: big blob GET gave ${b.status}, sha256:${b.sha}`);
  }
  for (const s of ['registry', 'regtape', 'talkback'] as Side[]) {
    const sm = await fetch(urls.smallBlob(servers[s].url));
    if (sm.status !== 200 || `sha256:${sm.sha}` !== small.layerDigest) throw new Error(`${s}: small blob GET gave ${sm.status}, sha256:${sm.sha}`);
  }
  for (const s of ['registry', 'regtape', 'bare'] as Side[]) {
    const m = await fetch(urls.manifest(servers[s].url), { accept: OCI_MANIFEST });
    if (m.status !== 200 || `sha256:${m.sha}` !== small.manifestDigest) throw new Error(`${s}: manifest GET gave ${m.status}, sha256:${m.sha}`);
  }
  // talkback stores JSON bodies parsed and sends them re-serialized: other bytes, so only its status is checked.
  const tbm = await fetch(urls.manifest(tb.url), { accept: OCI_MANIFEST });
  if (tbm.status !== 200) throw new Error(`talkback: manifest GET gave ${tbm.status}`);
  const talkbackManifestNote = `talkback sends ${tbm.size} manifest bytes (sha256:${tbm.sha.slice(0, 12)}...) for the ${small.manifestBytes.length} recorded (${small.manifestDigest.slice(0, 19)}...): it re-serializes JSON bodies`;
  log(`sanity: identical bytes from registry, regtape, bare node:http; ${talkbackManifestNote}; warming up`);
  for (const s of SIDES) {
    if (s !== 'bare') await wrk(urls.smallBlob(servers[s].url), [], 1);
    await wrk(urls.manifest(servers[s].url), [`Accept: ${OCI_MANIFEST}`], 1);
  }

  const S: Record<string, Samples> = {};
  const add = (id: string, s: Side, v: number): void => void ((S[id] ??= {})[s] ??= []).push(v);
  const errors: string[] = [];
  const checkWrk = (what: string, r: WrkResult): void => {
    if (r.non2xx || r.socketErrors) errors.push(`${what}: ${r.non2xx} non-2xx, ${r.socketErrors} socket errors`);
  };
  const recordStart: number[] = [];

  for (let i = 0; i < ROUNDS; i++) {
    log(`round ${i + 1}/${ROUNDS}`);
    // 2. 200 MB blob GET throughput (curl -> /dev/null), two GETs each; talkback has no tape for it
    for (const s of rotate(['registry', 'regtape'] as Side[], i)) {
      for (let k = 0; k < 2; k++) {
        const { value, cpuS } = await withPeak(servers[s].pid, () => curlGet(urls.bigBlob(servers[s].url), big.layerSize));
        add('blobBig', s, value);
        add('blobBigCpu', s, cpuS);
      }
    }
    // 3. 2 MB blobs, 16 connections
    for (const s of rotate(['registry', 'regtape', 'talkback'] as Side[], i)) {
      const { value, peakMiB, cpuS } = await withPeak(servers[s].pid, () => wrk(urls.smallBlob(servers[s].url), [], WRK_SECONDS));
      checkWrk(`2MB blob ${s}`, value);
      add('blobSmallRps', s, value.rps);
      add('blobSmallMiB', s, value.mibps);
      add('blobSmallRss', s, peakMiB);
      add('blobSmallCpu', s, (cpuS / value.requests) * 1e6);
    }
    // 4. manifest GETs, 16 connections
    for (const s of rotate(SIDES, i)) {
      const { value, peakMiB, cpuS } = await withPeak(servers[s].pid, () => wrk(urls.manifest(servers[s].url), [`Accept: ${OCI_MANIFEST}`], WRK_SECONDS));
      checkWrk(`manifest ${s}`, value);
      add('manifestRps', s, value.rps);
      add('manifestRss', s, peakMiB);
      add('manifestCpu', s, (cpuS / value.requests) * 1e6);
    }
    // 5. full pulls: direct, from replay, through a fresh recorder (rotating order)
    for (const p of rotate(['direct', 'replay', 'record'], i)) {
      const verify = i === 0;
      if (p === 'direct') {
        const { value, peakMiB, cpuS } = await withPeak(reg.pid, () => timedPull(h, reg.host, 'test/big', verify));
        add('pullReplay', 'registry', value);
        add('pullReplayRss', 'registry', peakMiB);
        add('pullReplayCpu', 'registry', cpuS);
        add('pullRecord', 'registry', value);
        add('pullRecordCpu', 'registry', cpuS);
      } else if (p === 'replay') {
        const { value, peakMiB, cpuS } = await withPeak(rep.pid, () => timedPull(h, rep.host, 'test/big', verify));
        add('pullReplay', 'regtape', value);
        add('pullReplayRss', 'regtape', peakMiB);
        add('pullReplayCpu', 'regtape', cpuS);
      } else {
        const out = h.tempDir(`record-round${i + 1}`);
        const rec = await startRegtape(h, 'record', ['record', '--upstream', reg.url, '--out', out]);
        recordStart.push(rec.startMs);
        // not reset: the recorder's peak and CPU over its whole life (start-up included)
        const { value, peakMiB } = await withPeak(rec.pid, () => timedPull(h, rec.host, 'test/big', verify), false);
        const cpuS = cpuOf(rec.pid);
        add('pullRecord', 'regtape', value);
        add('pullRecordRss', 'regtape', peakMiB);
        add('pullRecordCpu', 'regtape', cpuS);
        add('pullRecordCpuPer200', 'regtape', (cpuS * 200 * MiB) / big.layerSize);
        await h.procs.stop(rec.name);
        if (verify) {
          const stored = path.join(out, 'bodies', 'sha256', big.layerDigest.slice('sha256:'.length));
          const size = fs.existsSync(stored) ? fs.statSync(stored).size : -1;
          if (size !== big.layerSize) throw new Error(`record round ${i + 1}: stored layer has ${size} bytes, expected ${big.layerSize}`);
          if (sha256hex(fs.readFileSync(stored)) !== big.layerDigest.slice(7)) throw new Error(`record round ${i + 1}: the stored layer does not hash to its name`);
        }
        h.tmp.remove(out);
      }
    }
    const last = (id: string): string => SIDES.filter((s) => S[id]?.[s]?.length).map((s) => `${s} ${S[id][s]!.at(-1)!.toFixed(s === 'regtape' || s === 'registry' ? 2 : 0)}`).join(' ');
    log(`  manifest rps: ${last('manifestRps')}`);
    log(`  2MB rps: ${last('blobSmallRps')}; ${LAYER_MB}MiB MiB/s: ${last('blobBig')}; pull s replay: ${last('pullReplay')}; record: ${last('pullRecord')}`);
  }
  const replayIdle = memOf(rep.pid);
  await h.procs.stop(rep.name);
  await h.procs.stop(tb.name);
  await h.procs.stop(bare.name);

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
  for (let i = 0; i < ROUNDS; i++) {
    for (const which of rotate(['gen', 'rec'], i)) {
      const t = await startRegtape(h, 'replay-start', ['replay', which === 'gen' ? genDir : recDir, '--quiet']);
      const m = memOf(t.pid);
      if (which === 'gen') {
        const m0 = /replaying (\d+) exchanges/.exec(t.line);
        if (!m0 || Number(m0[1]) !== N_FIXTURES) throw new Error(`replay of ${N_FIXTURES} fixtures said: ${t.line}`);
        const r = await fetch(`${t.url}/v2/test/small/manifests/${lastTag}`, { accept: OCI_MANIFEST });
        if (r.status !== 200 || `sha256:${r.sha}` !== small.manifestDigest) throw new Error(`generated fixture ${lastTag}: HTTP ${r.status}`);
      }
      const id = which === 'gen' ? 'startBig' : 'startSmall';
      add(id, 'regtape', t.startMs / 1000);
      add(`${id}Cpu`, 'regtape', t.startCpuS);
      add(`${id}Rss`, 'regtape', m?.rss ?? NaN);
      await h.procs.stop(t.name);
    }
  }
  h.tmp.remove(genDir);

  // ---- results
  const per = `per ${LAYER_MB === 200 ? '' : '200 MiB, scaled from '}${LAYER_MB} MiB`;
  const metrics: Metric[] = [
    metric('manifest_x16_rps', 'manifest GETs x16 conns', 'req/s', S.manifestRps, ['x bare >= 0.85', 'x talkback >= 1.3'], talkbackManifestNote),
    metric('manifest_x16_cpu_us', 'server CPU per manifest GET', 'us', S.manifestCpu),
    metric('manifest_x16_peak_rss', 'server peak RSS during manifest x16', 'MiB', S.manifestRss, ['regtape < 150']),
    metric('blob_2mb_x16_rps', '2 MiB blob GETs x16 conns', 'req/s', S.blobSmallRps, ['x talkback >= 1']),
    metric('blob_2mb_x16_mibps', '2 MiB blob GETs x16 conns', 'MiB/s', S.blobSmallMiB),
    metric('blob_2mb_x16_cpu_us', 'server CPU per 2 MiB GET', 'us', S.blobSmallCpu),
    metric('blob_2mb_x16_peak_rss', 'server peak RSS during 2 MiB x16', 'MiB', S.blobSmallRss, ['regtape < 150']),
    metric('blob_200mb_get', `${LAYER_MB} MiB blob GET throughput`, 'MiB/s', S.blobBig, ['x registry >= 1']),
    metric('blob_200mb_get_cpu', `server CPU per ${LAYER_MB} MiB GET`, 'cpu s', S.blobBigCpu),
    metric('pull_replay_s', `skopeo pull ${LAYER_MB} MiB image, direct vs replay`, 's', S.pullReplay, ['x registry <= 1']),
    metric('pull_replay_peak_rss', 'server peak RSS during that pull', 'MiB', S.pullReplayRss, ['regtape < 150']),
    metric('pull_replay_cpu', 'server CPU during that pull', 'cpu s', S.pullReplayCpu),
    metric('pull_record_s', `skopeo pull ${LAYER_MB} MiB image, direct vs via a fresh record`, 's', S.pullRecord, ['x registry <= 1.3']),
    metric('pull_record_peak_rss', 'recorder peak RSS (whole life)', 'MiB', S.pullRecordRss, ['regtape < 150']),
    metric('pull_record_cpu', 'recorder CPU, whole process (registry: its CPU in a direct pull)', 'cpu s', S.pullRecordCpu, [], 'the registry also serves the recorder, using about as much CPU as in the direct pull'),
    metric('pull_record_cpu_per_200mb', `recorder CPU, whole process, ${per}`, 'cpu s', S.pullRecordCpuPer200, ['regtape <= 1']),
    metric('replay_start_10k_s', `replay start-up, ${N_FIXTURES} fixtures (spawn to listening)`, 's', S.startBig, ['regtape < 0.4']),
    metric('replay_start_10k_cpu', `replay start-up CPU, ${N_FIXTURES} fixtures`, 'cpu s', S.startBigCpu),
    metric('replay_start_10k_rss', `replay RSS after start, ${N_FIXTURES} fixtures`, 'MiB', S.startBigRss),
    metric('replay_start_small_s', `replay start-up, ${fixtures.length} fixtures (spawn to listening)`, 's', S.startSmall, ['regtape < 0.15']),
    metric('replay_start_small_cpu', `replay start-up CPU, ${fixtures.length} fixtures`, 'cpu s', S.startSmallCpu),
    metric('replay_start_small_rss', `replay RSS after start, ${fixtures.length} fixtures`, 'MiB', S.startSmallRss),
    metric('record_start_s', 'record start-up (spawn to listening)', 's', { regtape: recordStart.map((x) => x / 1000) }),
  ];
  const tableText = table(metrics);
  process.stdout.write(`\n${tableText}\n\n`);
  const missed = metrics.filter((m) => m.pass === false);
  process.stdout.write(missed.length ? `targets missed: ${missed.map((m) => m.id).join(', ')}\n` : 'all targets met\n');
  if (errors.length) process.stdout.write(`load errors: ${errors.join('; ')}\n`);
  const loadEnd = os.loadavg().map((x) => round(x, 2));
  if (Math.max(loadStart[0], loadEnd[0]) > 1.5) process.stdout.write(`note: load average ${loadStart[0]} at the start, ${loadEnd[0]} at the end: the machine was shared, wall-clock figures are noisy\n`);

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
      talkback: (JSON.parse(fs.readFileSync(require.resolve('talkback/package.json'), 'utf8')) as { version: string }).version,
      loadavgStart: loadStart,
      loadavgEnd: loadEnd,
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
