// Small helpers for the reliability tests: HTTP calls that never reject, bounded polling,
// listening sockets and memory of a process read from /proc.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { LOCK_FILE } from '../../src/record/lock';
import { processAlive } from '../../src/fixture/store';

export interface Got {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** the response ended normally (all announced bytes arrived) */
  complete: boolean;
  /** why the request or response failed (ECONNRESET, aborted, ...) */
  error?: string;
}

/** An HTTP request on loopback that never rejects: failures are reported in `error`. */
export function get(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: Buffer | string; timeoutMs?: number } = {},
): Promise<Got> {
  return new Promise((resolve) => {
    let settled = false;
    const chunks: Buffer[] = [];
    let status = 0;
    let headers: http.IncomingHttpHeaders = {};
    const done = (complete: boolean, error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ status, headers, body: Buffer.concat(chunks), complete, ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => {
      req.destroy();
      done(false, 'client timeout');
    }, opts.timeoutMs ?? 30_000);
    const req = http.request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      status = res.statusCode ?? 0;
      headers = res.headers;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => done(res.complete));
      res.on('aborted', () => done(false, 'aborted'));
      res.on('error', (e: NodeJS.ErrnoException) => done(false, e.code ?? e.message));
      res.on('close', () => done(res.complete, res.complete ? undefined : 'closed early'));
    });
    req.on('error', (e: NodeJS.ErrnoException) => done(false, e.code ?? e.message));
    req.end(opts.body);
  });
}

/** Polls `cond` every 50 ms until it holds; throws naming `what` after timeoutMs. Bounded. */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Every file under dir, as full paths, dotfiles included. */
export function filesUnder(dir: string): string[] {
  return allFiles(dir).map((f) => path.join(dir, f));
}

/** Every file under dir, relative, dotfiles included ([] when dir does not exist). */
export function allFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(path.join(d, e.name), path.join(rel, e.name));
      else out.push(path.join(rel, e.name));
    }
  };
  walk(dir, '');
  return out.sort();
}

/** Files a crashed or failed write may leave: dot-prefixed names anywhere, anything under bodies/.tmp. */
export function tempLeftovers(dir: string): string[] {
  // .gitattributes is written by record on purpose (beside bodies/), not a leftover.
  return allFiles(dir).filter((f) => isHidden(f) && f !== '.gitattributes' && !(f === LOCK_FILE && lockHeld(path.join(dir, f))));
}

/** A recorder's folder lock is no leftover while its recorder runs. */
function lockHeld(file: string): boolean {
  try {
    return processAlive((JSON.parse(fs.readFileSync(file, 'utf8')) as { pid: number }).pid);
  } catch {
    return false;
  }
}

const isHidden = (rel: string): boolean => rel.split(path.sep).some((part) => part.startsWith('.'));

/** Fixture files (what replay would load): not under bodies/, not dot-prefixed. */
export function fixtureFiles(dir: string): string[] {
  return allFiles(dir).filter((f) => !f.startsWith('bodies' + path.sep) && !isHidden(f));
}

export const sha256 = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

/** Sends raw bytes, returns everything that came back before the server closed (or timeoutMs passed). */
export function raw(port: number, bytes: Buffer | string, timeoutMs = 15_000): Promise<{ text: string; error?: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let error: string | undefined;
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    const timer = setTimeout(() => {
      error = 'client timeout';
      s.destroy();
    }, timeoutMs);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString('latin1'), ...(error ? { error } : {}) });
    });
  });
}

/** The status code of the first HTTP response in a raw reply (0 when there is none). */
export function statusOf(rawReply: string): number {
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(rawReply);
  return m ? Number(m[1]) : 0;
}

/** Local addresses (as "a.b.c.d" or "[v6]") on which something listens on this TCP port, from /proc/net. */
export function listeningAddresses(port: number): string[] {
  const out: string[] = [];
  for (const [file, v6] of [['/proc/net/tcp', false], ['/proc/net/tcp6', true]] as const) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || cols[3] !== '0A') continue; // 0A = LISTEN
      const [addrHex, portHex] = cols[1].split(':');
      if (parseInt(portHex, 16) !== port) continue;
      if (!v6) {
        const b = Buffer.from(addrHex, 'hex');
        out.push(`${b[3]}.${b[2]}.${b[1]}.${b[0]}`);
      } else {
        // four little-endian 32-bit words
        const words = addrHex.match(/.{8}/g)!.map((w) => Buffer.from(w, 'hex').reverse().toString('hex'));
        const hex = words.join('');
        const groups = hex.match(/.{4}/g)!.map((g) => g.replace(/^0+(?=.)/, ''));
        out.push(`[${groups.join(':')}]`);
      }
    }
  }
  return out;
}

/** VmRSS and VmHWM (peak RSS) of a process, in bytes. */
export function memoryOf(pid: number): { rss: number; peak: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

/** Runs a synchronous call and reports how long it took, with its result or what it threw. */
export function timed<T>(f: () => T): { ms: number; value?: T; error?: unknown } {
  const t0 = performance.now();
  try {
    const value = f();
    return { ms: performance.now() - t0, value };
  } catch (error) {
    return { ms: performance.now() - t0, error };
  }
}
