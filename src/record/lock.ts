/**
 * One recorder per fixtures folder. Two recorders appending to the same sequences would each count
 * from what they saw at start and overwrite each other's files. The second one refuses to start,
 * naming the holder; a lock left by a recorder that died (its pid gone, or reused by another
 * process) is taken over. The lock is a dotfile, so the loader never reads it.
 */
import { promises as fsp, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { processAlive } from '../fixture/store';
import { UserError } from '../http/server';

export const LOCK_FILE = '.regtape.lock';

interface LockInfo {
  pid: number;
  /** The process's start time (Linux: clock ticks since boot, /proc/<pid>/stat field 22): tells a reused pid apart. */
  started?: string;
  host: string;
  since: string;
}

export interface FolderLock {
  file: string;
  /** Synchronous, so that it can run in any close path. */
  release(): void;
}

/** Start time of a process as the kernel reports it, when it does (Linux); else undefined. */
function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function parse(text: string): LockInfo | undefined {
  try {
    const v = JSON.parse(text) as Partial<LockInfo>;
    return typeof v.pid === 'number' && typeof v.host === 'string' ? { pid: v.pid, started: v.started, host: v.host, since: String(v.since ?? '') } : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the recorder that wrote this lock may still be running. Unknown (other host, unreadable) counts as running. */
function holderAlive(info: LockInfo | undefined): boolean {
  if (!info) return true;
  if (info.host !== os.hostname()) return true;
  if (info.pid === process.pid) return true;
  if (!processAlive(info.pid)) return false;
  const now = startTimeOf(info.pid);
  return !(info.started && now && now !== info.started);
}

/** Takes the folder's lock, or throws a UserError naming the recorder that holds it. */
export async function lockFolder(dir: string): Promise<FolderLock> {
  const file = path.join(dir, LOCK_FILE);
  const mine: LockInfo = { pid: process.pid, started: startTimeOf(process.pid), host: os.hostname(), since: new Date().toISOString() };
  const text = JSON.stringify(mine) + '\n';
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      await fsp.writeFile(file, text, { flag: 'wx' });
      return { file, release: () => release(file, text) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new UserError(`cannot lock the fixtures folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    }
    const held = await fsp.readFile(file, 'utf8').catch(() => undefined);
    if (held === undefined) continue; // released just now: try again
    const info = parse(held);
    if (holderAlive(info)) {
      const who = info ? `pid ${info.pid}${info.host !== os.hostname() ? ` on ${info.host}` : ''}, since ${info.since}` : 'unknown holder';
      throw new UserError(
        `the fixtures folder ${dir} is in use by another regtape recorder (${who}): stop it, or record into another --out folder ` +
          `(if no such recorder runs, remove ${file})`,
      );
    }
    // Stale: its recorder died. Remove it only if it is still that very lock, then try again.
    const again = await fsp.readFile(file, 'utf8').catch(() => undefined);
    if (again === held) await fsp.rm(file, { force: true });
  }
  throw new UserError(`cannot lock the fixtures folder ${dir}: other recorders keep taking it; start one recorder per folder`);
}

function release(file: string, text: string): void {
  // Only our own lock: never one another recorder took over.
  let now: string | undefined;
  try {
    now = readFileSync(file, 'utf8');
  } catch {
    return;
  }
  if (now === text) rmSync(file, { force: true });
}
