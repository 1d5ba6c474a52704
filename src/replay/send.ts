/**
 * Serving one recorded (or derived) exchange: headers with the origin and upload placeholders filled,
 * conditional requests, ranges (single and multipart), and the body from memory or the store.
 */
import { createReadStream, close as fsClose, open as fsOpen, read as fsRead, readFile } from 'node:fs';
import { Readable } from 'node:stream';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import type * as http from 'node:http';
import { HeaderList, ORIGIN_PLACEHOLDER, RecordedResponse } from '../fixture/model';
import { LoadedExchange } from '../fixture/files';
import { HOP_BY_HOP } from '../http/server';
import { requestOrigin } from '../http/tls';
import { freshTokenResponse, ownRealmChallenge, TOKEN_PREFIX } from '../registry/auth';
import { UPLOAD_ID, UPLOAD_STATE } from '../registry/uploads';
import { ByteRange, etagMatches, parseRange } from '../http/range';

/** A request as the replay handlers see it: its path and its URL as sent. */
export type Req = http.IncomingMessage & { method: string; originalUrl: string; path: string };

/** Reads stored bodies in 1 MiB pieces: with the 64 KiB default a blob streams at half the speed. */
const READ_CHUNK = 1024 * 1024;

/** Stored bodies up to this size are served from memory (manifests, configs, small layers). */
const CACHE_ITEM_MAX = 8 * 1024 * 1024;
/** At most this much memory for them, least recently used dropped first. */
const CACHE_TOTAL = 64 * 1024 * 1024;
/** Per server: small stored bodies kept in memory, least recently used dropped first. */
export class BodyCache {
  private items = new Map<string, Buffer>();
  private bytes = 0;
  private prepared = new WeakMap<RecordedResponse, Prepared>();
  /** A recorded response's headers as served, worked out once per response, not per request. */
  headersOf(out: RecordedResponse): Prepared {
    let p = this.prepared.get(out);
    if (!p) this.prepared.set(out, (p = prepare(out)));
    return p;
  }
  get(file: string): Buffer | undefined {
    const b = this.items.get(file);
    if (b) {
      this.items.delete(file);
      this.items.set(file, b);
    }
    return b;
  }
  remember(file: string, b: Buffer): void {
    if (this.items.has(file)) return;
    this.items.set(file, b);
    this.bytes += b.length;
    for (const [k, v] of this.items) {
      if (this.bytes <= CACHE_TOTAL) break;
      this.items.delete(k);
      this.bytes -= v.length;
    }
  }
}
/** A recorded response's headers without hop-by-hop ones (and Content-Length where a body follows). */
interface Prepared {
  headers: HeaderList;
  /** Some value holds the origin or upload placeholders: filled per request. */
  dynamic: boolean;
  etag?: string;
  /** status + headers + Content-Length, ready for writeHead: for a whole body, no placeholders. */
  flat?: string[];
}

function prepare(out: RecordedResponse): Prepared {
  const headers: HeaderList = [];
  let dynamic = false;
  let etag: string | undefined;
  for (const [n, v] of out.headers) {
    const lower = n.toLowerCase();
    if (HOP_BY_HOP.has(lower)) continue;
    // Content-Length follows the body we serve; a recorded HEAD (no body) keeps its recorded length.
    if (lower === 'content-length' && out.body.kind !== 'none') continue;
    // The current time, sent by node:http, not the time of the recording.
    if (lower === 'date') continue;
    // Filled per request: the origin and upload placeholders, and challenges pointing at this server's realm.
    if (v.includes(ORIGIN_PLACEHOLDER) || v.includes(UPLOAD_ID) || v.includes(UPLOAD_STATE) || lower === 'www-authenticate') dynamic = true;
    if (lower === 'etag' && etag === undefined) etag = v;
    headers.push([n, v]);
  }
  const size = out.body.kind === 'inline' ? Buffer.byteLength(out.body.text) : out.body.kind === 'stored' ? out.body.size : 0;
  const flat = dynamic ? undefined : flatten(out.body.kind === 'none' ? headers : [...headers, ['Content-Length', String(size)]]);
  return { headers, dynamic, etag, flat };
}

/** Inline bodies as bytes, encoded once. */
const inlineBytes = new WeakMap<object, Buffer>();
function inlineBuffer(body: { kind: 'inline'; text: string }): Buffer {
  let b = inlineBytes.get(body);
  if (!b) inlineBytes.set(body, (b = Buffer.from(body.text)));
  return b;
}

/**
 * A stored body, or one range of it: from the memory cache when small, a read loop when large.
 * `done` gets the bytes sent once the response closed (Go clients close as soon as they have
 * Content-Length bytes, sometimes before 'finish').
 */
function sendStored(
  res: http.ServerResponse,
  ex: LoadedExchange,
  body: { kind: 'stored'; digest: string; size: number },
  cache: BodyCache,
  r: ByteRange | undefined,
  warn: (line: string) => void,
  done: (sent: number) => void,
): void {
  let sent = 0;
  res.once('close', () => done(sent));
  const fail = (e: Error): void => {
    // Headers are gone already: cut the connection so the client sees a short body, never a wrong one.
    warn(`regtape: cannot read body ${body.digest}: ${e.message}`);
    res.destroy();
  };
  const file = ex.store.pathFor(body.digest);
  const size = body.size;
  if (size <= CACHE_ITEM_MAX) {
    const send = (b: Buffer): void => {
      const chunk = r ? b.subarray(r.start, r.end + 1) : b;
      sent = chunk.length;
      res.end(chunk);
    };
    const hit = cache.get(file);
    if (hit) return send(hit);
    readFile(file, (e, b) => {
      if (e) return fail(e);
      if (b.length !== size) return fail(new Error(`the stored body has ${b.length} bytes, the fixture says ${size}`));
      cache.remember(file, b);
      send(b);
    });
    return;
  }
  sendFile(file, r ? r.start : 0, r ? r.end : size - 1, res, fail, (n) => (sent += n));
}

/**
 * Sends bytes [start, end] of a file with two reused buffers, one read ahead of the socket: no allocation
 * per chunk and no stream machinery, about the CPU per byte of the registry's sendfile.
 */
function sendFile(file: string, start: number, end: number, res: http.ServerResponse, onError: (e: Error) => void, onData: (n: number) => void): void {
  fsOpen(file, 'r', (err, fd) => {
    if (err) return onError(err);
    const bufs = [Buffer.allocUnsafeSlow(READ_CHUNK), Buffer.allocUnsafeSlow(READ_CHUNK)];
    let pos = start;
    let k = 0;
    let closed = false;
    const close = (): void => {
      if (!closed) fsClose(fd, () => undefined);
      closed = true;
    };
    res.once('close', close);
    const next = (): void => {
      if (res.destroyed) return close();
      const buf = bufs[k];
      k ^= 1;
      fsRead(fd, buf, 0, Math.min(READ_CHUNK, end + 1 - pos), pos, (e, n) => {
        if (e || n === 0) {
          close();
          return onError(e ?? new Error('the stored body is shorter than recorded'));
        }
        pos += n;
        onData(n);
        const chunk = n === READ_CHUNK ? buf : buf.subarray(0, n);
        if (pos > end) return void res.end(chunk, close);
        res.write(chunk);
        // A buffer is read into again only once its bytes have left the socket's queue.
        if (res.writableLength > READ_CHUNK) res.once('drain', next);
        else next();
      });
    };
    next();
  });
}

export function serveExchange(
  req: Req,
  res: http.ServerResponse,
  ex: LoadedExchange,
  cache: BodyCache,
  warn: (line: string) => void,
  done: (s: number, b: number) => void,
  fillUploads: (v: string) => string,
  cutAfter?: number,
): void {
  const out = ex.response!;
  let body = out.body;
  let tokenJson = false;
  if (body.kind === 'inline' && out.status === 200 && req.path.startsWith(TOKEN_PREFIX)) {
    const fresh = freshTokenResponse(body.text);
    if (fresh) body = { kind: 'inline', text: fresh };
    tokenJson = fresh !== undefined;
  }
  const prep = cache.headersOf(out);
  if (prep.flat && body === out.body && cutAfter === undefined && (req.method === 'GET' || req.method === 'HEAD') && !req.headers.range && !req.headers['if-none-match']) {
    // The common request (a whole body, nothing to fill in): headers as prepared, the body from memory when it can.
    res.writeHead(out.status, prep.flat);
    if (req.method === 'HEAD' || body.kind === 'none') {
      res.end();
      return done(out.status, 0);
    }
    if (body.kind === 'inline') {
      const b = inlineBuffer(body);
      res.end(b);
      return done(out.status, b.length);
    }
    const hit = body.size <= CACHE_ITEM_MAX ? cache.get(ex.store.pathFor(body.digest)) : undefined;
    if (hit) {
      res.end(hit);
      return done(out.status, hit.length);
    }
    return sendStored(res, ex, body, cache, undefined, warn, (n) => done(out.status, n));
  }
  const origin = requestOrigin(req);
  const headers: HeaderList = [];
  for (const [n, v] of prep.headers) {
    // A token answer recorded as a placeholder (text/plain, unparsable) is served as the JSON it now is.
    if (tokenJson && n.toLowerCase() === 'content-type' && !/json/i.test(v)) {
      headers.push([n, 'application/json']);
      continue;
    }
    let value = prep.dynamic && v.includes(ORIGIN_PLACEHOLDER) ? v.split(ORIGIN_PLACEHOLDER).join(origin) : v;
    if (prep.dynamic && (value.includes(UPLOAD_ID) || value.includes(UPLOAD_STATE))) value = fillUploads(value);
    if (n.toLowerCase() === 'www-authenticate') value = ownRealmChallenge(value, origin);
    headers.push([n, value]);
  }
  const size = body.kind === 'inline' ? Buffer.byteLength(body.text) : body.kind === 'stored' ? body.size : 0;
  let status = out.status;
  let ranges: ByteRange[] | 'unsatisfiable' | undefined;
  if (status === 200 && (req.method === 'GET' || req.method === 'HEAD')) {
    const etag = prep.etag;
    if (etagMatches(req.headers['if-none-match'], etag)) {
      res.writeHead(304, flatten(headers.filter(([n]) => !/^content-/i.test(n))));
      res.end();
      return done(304, 0);
    }
    if (body.kind !== 'none') ranges = parseRange(req.headers.range, size);
  }
  if (ranges === 'unsatisfiable') {
    res.writeHead(416, flatten([...headers.filter(([n]) => !/^content-/i.test(n)), ['Content-Range', `bytes */${size}`], ['Content-Length', '0']]));
    res.end();
    return done(416, 0);
  }
  const open = (r?: ByteRange): NodeJS.ReadableStream =>
    body.kind === 'inline'
      ? Readable.from([r ? Buffer.from(body.text).subarray(r.start, r.end + 1) : Buffer.from(body.text)])
      : createReadStream(ex.store.pathFor((body as { digest: string }).digest), { highWaterMark: READ_CHUNK, ...(r ? { start: r.start, end: r.end } : {}) });
  let parts: Array<{ head?: Buffer; range?: ByteRange }> = [{}];
  let tail: Buffer | undefined;
  let length = size;
  if (ranges && ranges.length === 1) {
    status = 206;
    const [r] = ranges;
    headers.push(['Content-Range', `bytes ${r.start}-${r.end}/${size}`]);
    parts = [{ range: r }];
    length = r.end - r.start + 1;
  } else if (ranges) {
    status = 206;
    const boundary = 'regtape-' + randomUUID();
    const type = headers.find(([n]) => n.toLowerCase() === 'content-type')?.[1] ?? 'application/octet-stream';
    const kept = headers.filter(([n]) => n.toLowerCase() !== 'content-type');
    headers.length = 0;
    headers.push(...kept, ['Content-Type', `multipart/byteranges; boundary=${boundary}`]);
    parts = ranges.map((r, i) => ({
      range: r,
      head: Buffer.from(`${i ? '\r\n' : ''}--${boundary}\r\nContent-Type: ${type}\r\nContent-Range: bytes ${r.start}-${r.end}/${size}\r\n\r\n`),
    }));
    tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    length = parts.reduce((n, p) => n + p.head!.length + p.range!.end - p.range!.start + 1, 0) + tail.length;
  }
  if (body.kind !== 'none') headers.push(['Content-Length', String(length)]);
  res.writeHead(status, flatten(headers));
  if (req.method === 'HEAD' || body.kind === 'none') {
    res.end();
    done(status, 0);
    return;
  }
  if (parts.length === 1 && !parts[0].head && cutAfter === undefined) {
    // One body or one range, no fault: memory for what fits, a read loop for the rest.
    const r = parts[0].range;
    if (body.kind === 'inline') {
      const b = body === out.body ? inlineBuffer(body) : Buffer.from(body.text);
      const chunk = r ? b.subarray(r.start, r.end + 1) : b;
      res.end(chunk);
      return done(status, chunk.length);
    }
    if (body.kind === 'stored') return sendStored(res, ex, body, cache, r, warn, (n) => done(status, n));
  }
  // Go clients close as soon as they have Content-Length bytes, sometimes before 'finish': count what was read.
  let sent = 0;
  res.once('close', () => done(status, sent));
  void (async () => {
    try {
      for (const p of parts) {
        if (p.head) res.write(p.head);
        for await (const c of open(p.range)) {
          let chunk = c as Buffer;
          if (cutAfter !== undefined && sent + chunk.length > cutAfter) {
            // Fault injection: a body that stops short, as when a CDN connection drops.
            res.write(chunk.subarray(0, cutAfter - sent), () => res.destroy());
            sent = cutAfter;
            return;
          }
          sent += chunk.length;
          if (!res.write(chunk)) await once(res, 'drain');
        }
      }
      res.end(tail);
    } catch (e) {
      // Headers are gone already: cut the connection so the client sees a short body, never a wrong one.
      if (body.kind === 'stored') warn(`regtape: cannot read body ${body.digest}: ${(e as Error).message}`);
      res.destroy();
    }
  })();
}

export function flatten(headers: HeaderList): string[] {
  const flat: string[] = [];
  for (const [n, v] of headers) flat.push(n, v);
  return flat;
}
