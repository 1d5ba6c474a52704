// A private containerd 1.6 (Debian) for e2e tests, driven with `ctr`, as root on loopback only.
//
// Everything lives in one temp dir D: config.toml, root (D/root: content store, metadata, snapshots),
// state (D/state), temp mounts (D/tmp), and the gRPC/ttrpc sockets (D/containerd.sock[.ttrpc]).
// No TCP listener; the host's /etc/containerd/config.toml is not read. Disabled plugins: cri (no
// Kubernetes, no CNI), opt (it would create /opt/containerd), btrfs/zfs/aufs/devmapper snapshotters and
// tracing (they only log noise). Images are unpacked with the overlayfs snapshotter by default (mounts are
// temporary, under D/tmp). stop() kills containerd, unmounts anything left under D and deletes D.
//
// ctr: `ctr -a D/containerd.sock -n NS images pull --plain-http [--user u:p] 127.0.0.1:PORT/repo:tag`.
// ctr has no TLS probe and no /v2/ ping: it HEADs the manifest (one comma-joined Accept line), GETs it by
// digest, then the blobs. It reads no docker config and, without --hosts-dir, no certs.d.
// Note: the content store is shared between namespaces ("shared" policy): a second pull of the same blobs
// in another namespace of the same containerd skips them. Start a fresh containerd for a fresh pull.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Image, tarArchive } from './image';
import { Procs } from './procs';
import { describeFailure, run, RunOptions, RunResult } from './run';
import { killProcessesUsing, mountsUnder } from './sys';
import { defaultTempDirs, TempDirs } from './tmp';

export interface ContainerdOptions {
  /** tracker for the log dir (which then lives until the tracker's removeAll(); REGTAPE_KEEP=1 keeps it) */
  tmp?: TempDirs;
  /** containerd namespace ctr uses (default regtape-<random>) */
  namespace?: string;
  /** snapshotter for unpacking pulled images (default overlayfs; 'native' needs no overlay support) */
  snapshotter?: string;
  /** binaries (default $REGTAPE_CONTAINERD / $REGTAPE_CTR, else 'containerd' / 'ctr') */
  binary?: string;
  ctrBinary?: string;
  /** how long to wait for `ctr version` to answer (default 20 s) */
  startTimeoutMs?: number;
  /** containerd log level (default info) */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
}

export interface CtrTransferOptions extends RunOptions {
  /** 'user:password' (--user) */
  user?: string;
  /** --plain-http (default true) */
  plainHttp?: boolean;
  /** --hosts-dir DIR: per-registry hosts.toml (server, ca, ...); pass plainHttp: false for https */
  hostsDir?: string;
}

export interface ContainerdImageTarget {
  mediaType: string;
  digest: string;
}

export interface Containerd {
  stateDir: string;
  sock: string;
  namespace: string;
  pid: number;
  /** the content store's blob directory (blobs/sha256/<hex>) */
  contentDir: string;
  /** `ctr -a SOCK -n NS ARGS`; never rejects (see run()) */
  ctr(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** ctr images pull [--plain-http] [--user] --snapshotter S REF */
  pull(ref: string, opts?: CtrTransferOptions): Promise<RunResult>;
  /** ctr images push [--plain-http] [--user] REMOTE [LOCAL] */
  push(remote: string, local?: string, opts?: CtrTransferOptions): Promise<RunResult>;
  /**
   * `ctr images import --base-name NAME` of the image's OCI layout (as a tar): the image is then
   * NAME:TAG, with no registry as its source (so a push uploads every blob instead of trying a
   * cross-repo mount from where it was pulled). Not unpacked unless `unpack`. Throws on failure.
   */
  importImage(image: Image, name: string, unpack?: boolean): Promise<string>;
  /** the image's target descriptor (from `ctr images ls`), or undefined if there is no such image */
  imageTarget(ref: string): Promise<ContainerdImageTarget | undefined>;
  /** a blob from the content store, or undefined */
  blob(digest: string): Buffer | undefined;
  /**
   * Throws unless REF is `image`: its target is the manifest digest, and the content store holds the
   * manifest and config byte for byte and every layer with the right sha256 and size.
   */
  checkImage(ref: string, image: Image): Promise<void>;
  /** containerd's stdout+stderr, last 200 lines */
  logs(): string;
  logFile: string;
  /** stops containerd (TERM, KILL after 5 s), unmounts leftovers, deletes stateDir; idempotent */
  stop(): Promise<void>;
}

const CONTAINERD = (): string => process.env.REGTAPE_CONTAINERD ?? 'containerd';
const CTR = (): string => process.env.REGTAPE_CTR ?? 'ctr';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const DISABLED_PLUGINS = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.internal.v1.opt',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
];

/** the environment without variables that would point containerd or ctr elsewhere */
function ctrdEnv(tmpDir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(CONTAINERD_|OTEL_|XDG_RUNTIME_DIR$)/.test(k) || /^(https?|all|no)_proxy$/i.test(k)) continue;
    env[k] = v;
  }
  env.TMPDIR = tmpDir;
  return env;
}


const tomlString = (s: string): string => JSON.stringify(s);

export async function startContainerd(opts: ContainerdOptions = {}): Promise<Containerd> {
  const tmp = opts.tmp ?? defaultTempDirs;
  const ownLogDir = opts.tmp === undefined && process.env.REGTAPE_KEEP !== '1';
  const stateDir = tmp.make('containerd');
  const logDir = tmp.make('containerd-logs');
  const rootDir = path.join(stateDir, 'root');
  const stateSub = path.join(stateDir, 'state');
  const tmpDir = path.join(stateDir, 'tmp');
  for (const x of [rootDir, stateSub, tmpDir]) fs.mkdirSync(x, { recursive: true });
  const sock = path.join(stateDir, 'containerd.sock');
  const namespace = opts.namespace ?? `regtape-${crypto.randomBytes(4).toString('hex')}`;
  const snapshotter = opts.snapshotter ?? 'overlayfs';
  const configPath = path.join(stateDir, 'config.toml');
  fs.writeFileSync(
    configPath,
    [
      'version = 2',
      `root = ${tomlString(rootDir)}`,
      `state = ${tomlString(stateSub)}`,
      `temp = ${tomlString(tmpDir)}`,
      `disabled_plugins = [${DISABLED_PLUGINS.map(tomlString).join(', ')}]`,
      '[grpc]',
      `  address = ${tomlString(sock)}`,
      '[ttrpc]',
      `  address = ${tomlString(sock + '.ttrpc')}`,
      '[debug]',
      `  level = ${tomlString(opts.logLevel ?? 'info')}`,
      '',
    ].join('\n'),
  );
  const env = ctrdEnv(tmpDir);
  const procs = new Procs({ logDir });
  procs.watchDir(stateDir); // removed by the watchdog if this process dies with containerd still running
  const ctrBin = opts.ctrBinary ?? CTR();
  const ctr = (args: string[], runOpts: RunOptions = {}): Promise<RunResult> =>
    run(ctrBin, ['-a', sock, '-n', namespace, ...args], { timeoutMs: 60_000, ...runOpts, env: { ...env, ...runOpts.env } });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await procs.stopAll();
      // anything else still running from our state dir (a shim, a stray ctr): ours, by construction
      await killProcessesUsing(stateDir);
      for (const m of mountsUnder(stateDir)) await run('umount', ['-l', m], { timeoutMs: 10_000 });
      tmp.remove(stateDir);
      if (ownLogDir) tmp.remove(logDir);
    })();
    return stopping;
  };

  try {
    const child = procs.spawn('containerd', opts.binary ?? CONTAINERD(), ['--config', configPath], { env, cwd: stateDir });
    const timeout = opts.startTimeoutMs ?? 20_000;
    const deadline = Date.now() + timeout;
    let last: RunResult | undefined;
    for (;;) {
      const dead = procs.exitError('containerd');
      if (dead) throw dead;
      if (fs.existsSync(sock)) {
        last = await ctr(['version'], { timeoutMs: 10_000 });
        if (last.code === 0) break;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `containerd did not answer \`ctr version\` within ${timeout} ms` +
            (last ? `\n${describeFailure(last)}` : ' (no socket)') +
            `\n--- containerd log (${procs.logFile('containerd')}) ---\n${procs.logs('containerd')}`,
        );
      }
      await sleep(100);
    }

    const transferFlags = (o: CtrTransferOptions): string[] => {
      const f: string[] = [];
      if (o.plainHttp ?? true) f.push('--plain-http');
      if (o.user) f.push('--user', o.user);
      if (o.hostsDir) f.push('--hosts-dir', o.hostsDir);
      return f;
    };
    const contentDir = path.join(rootDir, 'io.containerd.content.v1.content', 'blobs');
    const blob = (digest: string): Buffer | undefined => {
      const m = /^(sha256):([0-9a-f]{64})$/.exec(digest);
      if (!m) throw new Error(`not a sha256 digest: ${digest}`);
      const f = path.join(contentDir, m[1], m[2]);
      return fs.existsSync(f) ? fs.readFileSync(f) : undefined;
    };
    const imageTarget = async (ref: string): Promise<ContainerdImageTarget | undefined> => {
      const r = await ctr(['images', 'ls']);
      if (r.code !== 0) throw new Error(`ctr images ls failed: ${describeFailure(r)}`);
      for (const line of r.stdout.split('\n').slice(1)) {
        const [name, mediaType, digest] = line.trim().split(/\s+/);
        if (name === ref) return { mediaType, digest };
      }
      return undefined;
    };
    const checkImage = async (ref: string, image: Image): Promise<void> => {
      const problems: string[] = [];
      const t = await imageTarget(ref);
      if (!t) problems.push(`no image ${ref} in namespace ${namespace}`);
      else if (t.digest !== image.manifestDigest) problems.push(`target ${t.digest}, expected the manifest digest ${image.manifestDigest}`);
      const m = blob(image.manifestDigest);
      if (!m || !m.equals(image.manifestBytes)) problems.push(`manifest ${image.manifestDigest} ${m ? 'differs' : 'is missing'} in the content store`);
      const c = blob(image.configDigest);
      if (!c || !c.equals(image.configBytes)) problems.push(`config ${image.configDigest} ${c ? 'differs' : 'is missing'} in the content store`);
      for (const l of image.layerDigests) {
        const b = blob(l);
        if (!b) {
          problems.push(`layer ${l} is missing from the content store`);
          continue;
        }
        const got = `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;
        if (got !== l) problems.push(`layer ${l} in the content store hashes to ${got}`);
        if (b.length !== image.blobs.get(l)) problems.push(`layer ${l} has ${b.length} bytes, expected ${image.blobs.get(l)}`);
      }
      if (problems.length) throw new Error(`containerd image ${ref} is not the expected image:\n  ${problems.join('\n  ')}`);
    };

    const importImage = async (image: Image, name: string, unpack = false): Promise<string> => {
      const entries: Array<{ name: string; data?: Buffer }> = [];
      const walk = (rel: string): void => {
        for (const e of fs.readdirSync(path.join(image.dir, rel), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
          const r = rel ? `${rel}/${e.name}` : e.name;
          if (e.isDirectory()) {
            entries.push({ name: r });
            walk(r);
          } else entries.push({ name: r, data: fs.readFileSync(path.join(image.dir, r)) });
        }
      };
      walk('');
      const tarFile = path.join(tmpDir, `import-${crypto.randomBytes(4).toString('hex')}.tar`);
      fs.writeFileSync(tarFile, tarArchive(entries));
      try {
        const r = await ctr(['images', 'import', '--base-name', name, ...(unpack ? ['--snapshotter', snapshotter] : ['--no-unpack']), tarFile]);
        if (r.code !== 0) throw new Error(`ctr images import failed: ${describeFailure(r)}`);
      } finally {
        fs.rmSync(tarFile, { force: true });
      }
      const ref = `${name}:${image.tag}`;
      const t = await imageTarget(ref);
      if (t?.digest !== image.manifestDigest) throw new Error(`ctr images import: ${ref} has target ${t?.digest}, expected ${image.manifestDigest}`);
      return ref;
    };

    return {
      stateDir,
      sock,
      namespace,
      pid: child.pid ?? -1,
      contentDir,
      ctr,
      pull: (ref, o = {}) => ctr(['images', 'pull', ...transferFlags(o), '--snapshotter', snapshotter, ref], o),
      push: (remote, local, o = {}) => ctr(['images', 'push', ...transferFlags(o), remote, ...(local ? [local] : [])], o),
      importImage,
      imageTarget,
      blob,
      checkImage,
      logs: () => procs.logs('containerd'),
      logFile: procs.logFile('containerd'),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
