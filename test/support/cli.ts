import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const CLI = path.join(__dirname, '../../dist/cli.js');

export function ensureBuilt(): void {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` (npm test does)`);
}

/** A running `regtape` process: its output so far, the first stdout line, its exit. */
export class CliProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;

  constructor(args: string[], cwd?: string, env?: NodeJS.ProcessEnv) {
    ensureBuilt();
    this.child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    this.child.stdout!.on('data', (c: Buffer) => (this.stdout += c.toString()));
    this.child.stderr!.on('data', (c: Buffer) => (this.stderr += c.toString()));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  /** Resolves with the first stdout line (the "listening" line), or rejects with stderr if it exits first. */
  firstLine(timeoutMs = 15000): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no output in ${timeoutMs} ms; stderr: ${this.stderr}`)), timeoutMs);
      const check = (): void => {
        const nl = this.stdout.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(timer);
          resolve(this.stdout.slice(0, nl));
        }
      };
      this.child.stdout!.on('data', check);
      void this.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`exited ${code} before listening; stderr: ${this.stderr}`));
      });
      check();
    });
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null) this.child.kill(signal);
    return this.exited;
  }
}

/** Runs the CLI to completion (for commands that fail fast). */
export async function runCli(args: string[], cwd?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = new CliProcess(args, cwd);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), 20000);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, stdout: p.stdout, stderr: p.stderr };
}
