import { spawn } from 'child_process';

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** kill the process (TERM, then KILL 3 s later) after this long; default 120 s */
  timeoutMs?: number;
  /** written to stdin, which is then closed (stdin is empty otherwise) */
  input?: string | Buffer;
}

export interface RunResult {
  /** exit code; -1 when the process was ended by a signal (see `signal`, `timedOut`); 127 when it could not start */
  code: number;
  stdout: string;
  stderr: string;
  /** stdout as raw bytes (for manifests and other byte-exact output) */
  stdoutBuffer: Buffer;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** the command line, for messages */
  command: string;
}

const KILL_GRACE_MS = 3000;

function quote(a: string): string {
  return /^[A-Za-z0-9_\-./:=@,+%]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

export function commandLine(cmd: string, args: string[]): string {
  return [cmd, ...args].map(quote).join(' ');
}

/**
 * Run a command to completion and collect its output. Never rejects: a non-zero exit, a failure
 * to start (code 127) and a timeout (process killed, timedOut = true, note appended to stderr)
 * are all reported in the result.
 */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const command = commandLine(cmd, args);
  return new Promise((resolve) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    let spawnError: Error | undefined;
    let settled = false;
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
    }, timeoutMs);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.stdin.on('error', () => undefined); // EPIPE when the command does not read its input
    child.stdin.end(opts.input ?? '');
    child.once('error', (e) => {
      spawnError = e;
    });
    child.once('close', (code, signal) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (killTimer) clearTimeout(killTimer);
      const stdoutBuffer = Buffer.concat(out);
      let stderr = Buffer.concat(err).toString('utf8');
      let exit = code ?? -1;
      if (spawnError) {
        exit = 127;
        stderr += `${stderr && !stderr.endsWith('\n') ? '\n' : ''}could not start ${command}: ${spawnError.message}\n`;
      }
      if (timedOut) {
        stderr += `${stderr && !stderr.endsWith('\n') ? '\n' : ''}killed after the ${timeoutMs} ms timeout: ${command}\n`;
      }
      resolve({ code: exit, stdout: stdoutBuffer.toString('utf8'), stderr, stdoutBuffer, signal, timedOut, command });
    });
  });
}

/** A one-paragraph description of a failed run, for error messages. */
export function describeFailure(r: RunResult): string {
  const how = r.timedOut ? 'timed out' : r.signal ? `was killed by ${r.signal}` : `exited with ${r.code}`;
  const tail = (s: string): string => s.trim().split('\n').slice(-30).join('\n');
  return `${r.command} ${how}\n--- stderr ---\n${tail(r.stderr)}${r.stdout.trim() ? `\n--- stdout ---\n${tail(r.stdout)}` : ''}`;
}
