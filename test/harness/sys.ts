// What the kernel says about processes and mounts, for harnesses that must stop exactly what they started.
import * as fs from 'fs';
import * as path from 'path';

/** A live (not zombie) process? */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** PIDs of live processes whose command line mentions `dir` (ours only, when dir is a fresh mkdtemp). */
export function processesUsing(dir: string): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0').some((a) => a.includes(dir)) && processAlive(Number(e))) out.push(Number(e));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Mount points at or under dir, deepest first. */
export function mountsUnder(dir: string): string[] {
  let text = '';
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return text
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m)
    .map(unescape)
    .filter((m) => m === dir || m.startsWith(dir + path.sep))
    .sort((a, b) => b.length - a.length);
}

/** Stops every process still running from dir (TERM, then KILL), waiting up to 3 s after each signal. */
export async function killProcessesUsing(dir: string): Promise<void> {
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    const pids = processesUsing(dir);
    if (!pids.length) return;
    for (const p of pids) {
      try {
        process.kill(p, sig);
      } catch {
        /* gone */
      }
    }
    for (let i = 0; i < 30 && pids.some(processAlive); i++) await new Promise((r) => setTimeout(r, 100));
  }
}
