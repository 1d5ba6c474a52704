import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
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

// Every child started by any Procs that is still running. If the test process exits without
// stopping them (a crash, a forgotten stop), they get SIGKILL here so nothing is left behind.
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
      log.write(`# exited code=${code} signal=${signal}\n`);
    });
    child.once('close', () => log.end());
    if (child.pid !== undefined) live.add(child);
    this.entries.set(name, e);
    return child;
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`Procs: no process named "${name}"`);
    return e;
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
  }

  /** Stop every process started here (in parallel). */
  async stopAll(): Promise<void> {
    await Promise.all(this.names().map((n) => this.stop(n)));
  }
}
