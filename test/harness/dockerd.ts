// A private Docker daemon (Debian's dockerd 20.10) for e2e tests, run as root on loopback only.
//
// Everything lives in one temp dir: daemon.json, data-root, exec-root, pidfile, the API socket
// (unix://<dir>/docker.sock, no TCP), the trust key ("deprecated-key-path": there is no CLI flag for it;
// without it dockerd writes /etc/docker/key.json), and the docker CLI's own config dir (DOCKER_CONFIG).
// The daemon starts its own containerd (under <exec-root>/containerd) in unique containerd namespaces.
// daemon.json turns off everything that touches the host's network: iptables, ip-masq, the bridge
// (so containers get no network), the userland proxy. Storage is vfs (no overlay mounts).
// 127.0.0.0/8 is an insecure registry by default: `docker pull 127.0.0.1:PORT/repo:tag` uses plain http
// (after a TLS probe). `mirrors` sets "registry-mirrors": `docker pull alpine` then asks the mirror for
// /v2/library/alpine/...; if the mirror answers 404 the daemon falls back to registry-1.docker.io
// (which fails at once offline) and reports that error, not the mirror's.
// The only thing left outside the temp dir is /run/docker/plugins (an empty dir dockerd creates); stop()
// removes it again if this daemon created it and it is still empty.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Procs } from './procs';
import { describeFailure, run, RunOptions, RunResult } from './run';
import { mountsUnder, processAlive } from './sys';
export { processAlive } from './sys';
import { defaultTempDirs, TempDirs } from './tmp';

export interface DockerdOptions {
  /** "registry-mirrors" (loopback URLs only), e.g. ['http://127.0.0.1:5000'] */
  mirrors?: string[];
  /** "insecure-registries" in addition to the default 127.0.0.0/8 (loopback only) */
  insecureRegistries?: string[];
  /** daemon debug log (each registry request the daemon makes); default false */
  debug?: boolean;
  /**
   * tracker for the log dir, which then outlives stop() until the tracker's removeAll() (kept with REGTAPE_KEEP=1).
   * Without it, stop() removes the log dir too (unless REGTAPE_KEEP=1). The state dir is always removed by stop().
   */
  tmp?: TempDirs;
  /** dockerd binary (default $REGTAPE_DOCKERD or 'dockerd') */
  binary?: string;
  /** docker CLI binary (default $REGTAPE_DOCKER or 'docker') */
  cli?: string;
  /** how long to wait for `docker info` to answer (default 30 s) */
  startTimeoutMs?: number;
  /** more environment for the daemon, e.g. HTTPS_PROXY and SSL_CERT_FILE (proxy variables are otherwise dropped) */
  env?: NodeJS.ProcessEnv;
}

export interface Dockerd {
  /** path of the API socket */
  sock: string;
  /** 'unix://<sock>', for DOCKER_HOST or -H */
  host: string;
  /** temp dir holding everything (removed by stop()) */
  stateDir: string;
  /** the containerd namespace (the plugins namespace is this + '-plugins') */
  namespace: string;
  pid: number;
  /** PID of the containerd dockerd launched (read from <exec-root>/containerd/containerd.pid), if known */
  containerdPid(): number | undefined;
  /** `docker -H unix://<sock> ARGS` with a private, empty DOCKER_CONFIG; never rejects (see run()) */
  docker(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** dockerd's stdout+stderr, last 200 lines */
  logs(): string;
  /** full log file (see DockerdOptions.tmp for how long it stays) */
  logFile: string;
  /** stops dockerd (TERM, KILL after 5 s) and the containerd it launched, removes stateDir; idempotent */
  stop(): Promise<void>;
}

const DOCKERD = (): string => process.env.REGTAPE_DOCKERD ?? 'dockerd';
const DOCKER = (): string => process.env.REGTAPE_DOCKER ?? 'docker';
const RUN_DOCKER_PLUGINS = '/run/docker/plugins';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function isLoopbackUrl(u: string): boolean {
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    return false;
  }
  const h = url.hostname.replace(/^\[|\]$/g, '');
  return (url.protocol === 'http:' || url.protocol === 'https:') && (/^127\.\d+\.\d+\.\d+$/.test(h) || h === 'localhost' || h === '::1');
}

function isLoopbackHost(h: string): boolean {
  return /^127\.\d+\.\d+\.\d+(:\d+)?$/.test(h) || /^127\.0\.0\.0\/8$/.test(h) || /^localhost(:\d+)?$/.test(h) || /^\[::1\](:\d+)?$/.test(h);
}

/** the environment without the variables that would point dockerd or the CLI elsewhere */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(DOCKER_|OTEL_)/.test(k) || /^(https?|all|no)_proxy$/i.test(k)) continue;
    env[k] = v;
  }
  return env;
}

function cmdlineOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}


export async function startDockerd(opts: DockerdOptions = {}): Promise<Dockerd> {
  const mirrors = opts.mirrors ?? [];
  for (const m of mirrors) if (!isLoopbackUrl(m)) throw new Error(`startDockerd: mirror ${m} is not a loopback http(s) URL`);
  const insecure = opts.insecureRegistries ?? [];
  for (const r of insecure) if (!isLoopbackHost(r)) throw new Error(`startDockerd: insecure registry ${r} is not a loopback address`);
  const tmp = opts.tmp ?? defaultTempDirs;
  const ownLogDir = opts.tmp === undefined && process.env.REGTAPE_KEEP !== '1';
  const bin = opts.binary ?? DOCKERD();
  const cli = opts.cli ?? DOCKER();

  const stateDir = tmp.make('dockerd');
  const logDir = tmp.make('dockerd-logs');
  const dataRoot = path.join(stateDir, 'data');
  const execRoot = path.join(stateDir, 'exec');
  const cliConfig = path.join(stateDir, 'cli');
  for (const d of [dataRoot, execRoot, cliConfig]) fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(cliConfig, 'config.json'), '{}\n');
  const sock = path.join(stateDir, 'docker.sock');
  const host = `unix://${sock}`;
  const namespace = `regtape-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  const configFile = path.join(stateDir, 'daemon.json');
  fs.writeFileSync(
    configFile,
    JSON.stringify(
      {
        'registry-mirrors': mirrors,
        'insecure-registries': insecure,
        iptables: false,
        'ip-masq': false,
        bridge: 'none',
        'storage-driver': 'vfs',
        'userland-proxy': false,
        'deprecated-key-path': path.join(stateDir, 'key.json'),
        debug: opts.debug ?? false,
      },
      null,
      2,
    ) + '\n',
  );
  const containerdPidFile = path.join(execRoot, 'containerd', 'containerd.pid');
  const createdRunDocker = !fs.existsSync(RUN_DOCKER_PLUGINS);

  const procs = new Procs({ logDir });
  procs.watchDir(stateDir); // removed by the watchdog if this process dies with dockerd still running
  let containerdPid: number | undefined;
  const readContainerdPid = (): number | undefined => {
    try {
      const n = Number(fs.readFileSync(containerdPidFile, 'utf8').trim());
      // only a containerd whose command line names our exec root is ours
      if (n > 0 && cmdlineOf(n).includes(execRoot)) containerdPid = n;
    } catch {
      /* not written (yet) */
    }
    return containerdPid;
  };

  const docker = (args: string[], runOpts: RunOptions = {}): Promise<RunResult> =>
    run(cli, ['-H', host, ...args], {
      timeoutMs: 60_000,
      ...runOpts,
      env: { ...cleanEnv(), ...runOpts.env, DOCKER_CONFIG: cliConfig, DOCKER_CLI_HINTS: 'false' },
    });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      readContainerdPid();
      await procs.stopAll();
      // dockerd stops its containerd on TERM; if dockerd was killed, containerd may outlive it
      const c = containerdPid;
      if (c !== undefined && processAlive(c) && cmdlineOf(c).includes(execRoot)) {
        process.kill(c, 'SIGTERM');
        for (let i = 0; i < 50 && processAlive(c); i++) await sleep(100);
        if (processAlive(c)) process.kill(c, 'SIGKILL');
        for (let i = 0; i < 50 && processAlive(c); i++) await sleep(100);
      }
      for (const m of mountsUnder(stateDir)) await run('umount', ['-l', m], { timeoutMs: 10_000 });
      tmp.remove(stateDir);
      if (ownLogDir) tmp.remove(logDir);
      if (createdRunDocker) {
        for (const d of [RUN_DOCKER_PLUGINS, path.dirname(RUN_DOCKER_PLUGINS)]) {
          try {
            fs.rmdirSync(d); // only if empty
          } catch {
            break;
          }
        }
      }
    })();
    return stopping;
  };

  try {
    const child = procs.spawn(
      'dockerd',
      bin,
      [
        '--config-file', configFile,
        '--data-root', dataRoot,
        '--exec-root', execRoot,
        '--pidfile', path.join(stateDir, 'dockerd.pid'),
        '-H', host,
        '--containerd-namespace', namespace,
        '--containerd-plugins-namespace', `${namespace}-plugins`,
      ],
      { env: { ...cleanEnv(), ...opts.env }, cwd: stateDir },
    );
    const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
    let last: RunResult | undefined;
    for (;;) {
      const dead = procs.exitError('dockerd');
      if (dead) throw dead;
      if (fs.existsSync(sock)) {
        last = await docker(['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 10_000 });
        if (last.code === 0) break;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `dockerd did not answer \`docker info\` within ${opts.startTimeoutMs ?? 30_000} ms` +
            (last ? `\n${describeFailure(last)}` : ' (no socket)') +
            `\n--- dockerd log (${procs.logFile('dockerd')}) ---\n${procs.logs('dockerd')}`,
        );
      }
      await sleep(200);
    }
    readContainerdPid();
    return {
      sock,
      host,
      stateDir,
      namespace,
      pid: child.pid ?? -1,
      containerdPid: readContainerdPid,
      docker,
      logs: () => procs.logs('dockerd'),
      logFile: procs.logFile('dockerd'),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
