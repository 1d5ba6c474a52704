import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { commandLine } from './run';
import { defaultTempDirs, TempDirs } from './tmp';

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

interface Entry {
  name: string;
  child: ChildProcess;
  command: string;
  logFile: string;
  log: fs.WriteStream;
  tail: string[];
  partial: string;
  exited: Promise<void>;
  closed: Promise<void>;
}

const TAIL_LINES = 200;
const STOP_GRACE_MS = 5000;

// Safety nets for children that outlive their test (a crashed or killed test process, a forgotten stop):
// 1. process 'exit' hook: SIGKILL every child still running. Best effort only: inside jest the test's
//    `process` is a sandbox copy whose 'exit' listeners do not fire.
// 2. a watchdog per Procs: a tiny `sh` that holds a pipe from us and a list of our live PIDs. When the
//    pipe closes because this process died, it sends TERM (then KILL 2 s later) to the PIDs still listed,
//    and removes the directories given to watchDir() (a registry's state dir, say).
//    It exits by itself once stopAll() has stopped everything (we close the pipe with an empty list).
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

const WATCHDOG_SH = `
trap '' INT HUP
set -f
pids=' '
dirs=''
while IFS= read -r line; do
  case $line in
    +*) pids="$pids\${line#+} " ;;
    -*) n=' '; for p in $pids; do [ "$p" = "\${line#-}" ] || n="$n$p "; done; pids=$n ;;
    =*) dirs="$dirs\${line#=}
" ;;
  esac
done
[ -z "\${pids# }" ] && exit 0
for p in $pids; do kill -TERM "$p" 2>/dev/null; done
sleep 2
for p in $pids; do kill -KILL "$p" 2>/dev/null; done
IFS='
'
for d in $dirs; do rm -rf -- "$d"; done
exit 0
`;

class Watchdog {
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private readonly pids = new Set<number>();
  private readonly dirs = new Set<string>();

  addDir(dir: string): void {
    this.dirs.add(dir);
    if (this.child && running(this.child)) this.child.stdin?.write(`=${dir}\n`);
  }

  add(pid: number): void {
    if (!this.child || !running(this.child)) {
      const c = spawn('sh', ['-c', WATCHDOG_SH, 'regtape-watchdog'], { stdio: ['pipe', 'ignore', 'ignore'] });
      c.on('error', () => undefined);
      c.stdin?.on('error', () => undefined);
      this.exited = new Promise((resolve) => c.once('exit', () => resolve()));
      c.unref();
      (c.stdin as unknown as { unref?: () => void } | null)?.unref?.(); // a pipe socket: don't keep the event loop alive
      this.child = c;
      for (const p of this.pids) c.stdin?.write(`+${p}\n`);
      for (const d of this.dirs) c.stdin?.write(`=${d}\n`);
    }
    this.pids.add(pid);
    this.child.stdin?.write(`+${pid}\n`);
  }

  remove(pid: number): void {
    if (!this.pids.delete(pid)) return;
    if (this.child && running(this.child)) this.child.stdin?.write(`-${pid}\n`);
  }

  /** if nothing is watched any more, let the watchdog exit and wait for it */
  async release(): Promise<void> {
    if (this.pids.size > 0 || !this.child) return;
    const c = this.child;
    const exited = this.exited;
    this.child = undefined;
    this.exited = undefined;
    c.ref(); // keep the event loop alive until it has exited
    c.stdin?.end();
    if (running(c)) await exited;
  }
}

function running(c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null;
}

/**
 * Long-running processes (servers) started by a test. Each has a name; its stdout and stderr go
 * to `<logDir>/<name>.log`, and the last lines are kept in memory for error messages.
 * stop()/stopAll() send SIGTERM and SIGKILL after 5 s, and only ever signal the PIDs started here.
 */
export class Procs {
  private readonly entries = new Map<string, Entry>();
  private readonly watchdog = new Watchdog();
  private dir: string | undefined;

  /** logDir: where the `<name>.log` files go (default: a fresh temp dir from `tmp`). */
  constructor(private readonly opts: { logDir?: string; tmp?: TempDirs } = {}) {}

  get logDir(): string {
    if (!this.dir) {
      this.dir = this.opts.logDir ?? (this.opts.tmp ?? defaultTempDirs).make('logs');
      fs.mkdirSync(this.dir, { recursive: true });
    }
    return this.dir;
  }

  spawn(name: string, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const old = this.entries.get(name);
    if (old && running(old.child)) throw new Error(`Procs: a process named "${name}" is still running (pid ${old.child.pid})`);
    const logFile = path.join(this.logDir, `${name.replace(/[^A-Za-z0-9_.-]/g, '_')}.log`);
    const log = fs.createWriteStream(logFile, { flags: 'a' });
    const command = commandLine(cmd, args);
    log.write(`# ${new Date().toISOString()} ${command}\n`);
    const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const e: Entry = {
      name,
      child,
      command,
      logFile,
      log,
      tail: [],
      partial: '',
      exited: new Promise((resolve) => child.once('exit', () => resolve())),
      closed: new Promise((resolve) => child.once('close', () => resolve())),
    };
    const onData = (c: Buffer): void => {
      log.write(c);
      const lines = (e.partial + c.toString('utf8')).split('\n');
      e.partial = lines.pop() ?? '';
      e.tail.push(...lines);
      if (e.tail.length > TAIL_LINES) e.tail.splice(0, e.tail.length - TAIL_LINES);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('error', (err) => {
      e.tail.push(`could not start ${command}: ${err.message}`);
      log.write(`# could not start: ${err.message}\n`);
    });
    child.once('exit', (code, signal) => {
      live.delete(child);
      if (child.pid !== undefined) this.watchdog.remove(child.pid);
      log.write(`# exited code=${code} signal=${signal}\n`);
    });
    child.once('close', () => log.end());
    if (child.pid !== undefined) {
      live.add(child);
      this.watchdog.add(child.pid);
    }
    this.entries.set(name, e);
    return child;
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`Procs: no process named "${name}"`);
    return e;
  }

  /**
   * Also remove `dir` (which must be under os.tmpdir()) if this process dies while children
   * started here are still running. Normal cleanup of the dir stays the caller's job.
   */
  watchDir(dir: string): void {
    const abs = path.resolve(dir);
    if (!abs.startsWith(path.resolve(os.tmpdir()) + path.sep) || abs.includes('\n')) {
      throw new Error(`Procs.watchDir: ${dir} is not a directory under ${os.tmpdir()}`);
    }
    this.watchdog.addDir(abs);
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  pid(name: string): number | undefined {
    return this.entry(name).child.pid;
  }

  isRunning(name: string): boolean {
    const e = this.entries.get(name);
    return !!e && e.child.pid !== undefined && running(e.child);
  }

  logFile(name: string): string {
    return this.entry(name).logFile;
  }

  /** The last lines (up to 200) the process wrote to stdout/stderr. */
  logs(name: string): string {
    const e = this.entry(name);
    return [...e.tail, ...(e.partial ? [e.partial] : [])].join('\n');
  }

  /** An Error describing how the process ended (with its last log lines), or undefined while it runs. */
  exitError(name: string): Error | undefined {
    const e = this.entry(name);
    if (e.child.pid !== undefined && running(e.child)) return undefined;
    const how = e.child.pid === undefined ? 'could not start' : `exited (code ${e.child.exitCode}, signal ${e.child.signalCode})`;
    return new Error(`${name} ${how}: ${e.command}\n--- last log lines (${e.logFile}) ---\n${this.logs(name)}`);
  }

  /** SIGTERM, then SIGKILL after 5 s; resolves when the process has exited. No-op if it is not running. */
  async stop(name: string): Promise<void> {
    const e = this.entries.get(name);
    if (!e) return;
    const c = e.child;
    if (c.pid !== undefined && running(c)) {
      c.kill('SIGTERM');
      let t: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((r) => (t = setTimeout(() => r('timeout'), STOP_GRACE_MS)));
      const r = await Promise.race([e.exited.then(() => 'exited' as const), timeout]);
      if (t) clearTimeout(t);
      if (r === 'timeout' && running(c)) {
        c.kill('SIGKILL');
        await e.exited;
      }
    }
    // let the stdio pipes drain into the log file (bounded: a grandchild could hold them open)
    if (c.pid !== undefined) await Promise.race([e.closed, new Promise((r) => setTimeout(r, 1000).unref())]);
    live.delete(c);
    if (c.pid !== undefined) this.watchdog.remove(c.pid);
    await this.watchdog.release();
  }

  /** Stop every process started here (in parallel). */
  async stopAll(): Promise<void> {
    await Promise.all(this.names().map((n) => this.stop(n)));
  }
}
