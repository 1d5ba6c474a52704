/**
 * `regtape replay DIR -- CMD ARGS...`: one command runs a test suite against a replay and exits with
 * the suite's verdict. This file owns the child process: its environment, signals, and exit code.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { UserError } from '../http/server';

/**
 * Splits `regtape replay ... -- CMD ARGS...` before commander sees it: commander would take CMD and
 * ARGS as more fixture paths (they follow the variadic <paths...>). Only for `replay`, and only the
 * first `--` counts: whatever follows belongs to CMD, `--` included.
 */
export function splitExec(argv: string[]): { argv: string[]; command?: string[] } {
  const sub = argv.findIndex((a, i) => i >= 2 && !a.startsWith('-'));
  if (sub < 0 || argv[sub] !== 'replay') return { argv };
  const dd = argv.indexOf('--', sub + 1);
  if (dd < 0) return { argv };
  const command = argv.slice(dd + 1);
  if (command.length === 0) throw new UserError("nothing after '--': give the command to run against the replay, e.g. regtape replay fixtures/ -- npm test");
  return { argv: argv.slice(0, dd), command };
}

/** What a client on this machine dials for a server listening on `host`:`port`. */
export function clientAddress(host: string, port: number, scheme: 'http' | 'https' = 'http'): { url: string; host: string } {
  const dial = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  const hostPort = dial.includes(':') ? `[${dial}]:${port}` : `${dial}:${port}`;
  return { url: `${scheme}://${hostPort}`, host: hostPort };
}

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Runs `command` with stdin/stdout/stderr passed through and `env` added; regtape's SIGINT, SIGTERM
 * and SIGHUP go on to it (regtape itself waits for it). Resolves with its exit code, 128+N when a
 * signal N ended it (as a shell reports it), 127 when it could not be started.
 */
export function runCommand(command: string[], env: Record<string, string>, say: (line: string) => void): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(command[0], command.slice(1), { stdio: 'inherit', env: { ...process.env, ...env } });
    const forward = (sig: NodeJS.Signals): void => {
      if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    };
    for (const s of FORWARDED) process.on(s, forward);
    let done = false;
    const finish = (code: number): void => {
      if (done) return;
      done = true;
      for (const s of FORWARDED) process.off(s, forward);
      resolve(code);
    };
    child.on('error', (e: NodeJS.ErrnoException) => {
      say(
        e.code === 'ENOENT'
          ? `regtape: cannot run ${JSON.stringify(command[0])}: command not found (check the command after '--' and PATH)`
          : e.code === 'EACCES'
            ? `regtape: cannot run ${JSON.stringify(command[0])}: permission denied`
            : `regtape: cannot run ${JSON.stringify(command[0])}: ${e.message}`,
      );
      finish(e.code === 'EACCES' ? 126 : 127);
    });
    child.on('exit', (code, signal) => finish(code ?? 128 + (signal ? constants.signals[signal] ?? 0 : 0)));
  });
}
