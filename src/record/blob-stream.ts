/**
 * The recorder's fast path for blob GETs (`/v2/<name>/blobs/<digest>`): the URL names the digest, so
 * the body can be checked against it. Node's HTTP client copies every body chunk out of the socket's
 * buffer and the hash and file write would share the main thread with the sockets; here the request
 * goes out on a plain socket, the response head is parsed once, and the body's socket chunks go to
 * the client as they are, while a worker thread (fixture/hasher.ts) hashes them and writes them to a
 * temp file in large runs. The last chunk is held back until the digest is verified: a body that does
 * not match its digest is never stored, and the client sees a cut connection, never a complete wrong
 * body. Backpressure both ways: the upstream socket pauses while the client or the ring is full.
 *
 * Only a plain `200` with a Content-Length and no transfer or content coding is streamed this way;
 * any other answer (redirects, challenges, errors: small) is read whole and handed back in one piece,
 * and an answer this module cannot frame makes it give the request back to the regular proxy (a GET
 * is safe to send again).
 */
import { createHash } from 'node:crypto';
import * as net from 'node:net';
import type * as http from 'node:http';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Body, HeaderList, headerValue } from '../fixture/model';
import { BodyStore, isTextContentType } from '../fixture/store';
import { Hasher, HashedFile } from '../fixture/hasher';
import { HOP_BY_HOP } from '../http/server';
import { routeOf } from '../registry/routes';
import type { Target } from './targets';

/** Response heads larger than this are not a registry's: the request goes the regular way. */
const MAX_HEAD = 64 * 1024;
/** Answers read whole (and checked before a byte is sent on): non-200 ones and blobs below this size. */
const MAX_SMALL = 1024 * 1024;

export interface BlobExchange {
  status: number;
  statusMessage: string;
  /** The response headers as the client got them (targets.clientHeaders of the upstream's, hop-by-hop ones removed). */
  headers: HeaderList;
  body: Body;
}

export interface BlobForward {
  target: Target;
  /** The request's headers to send on (hop-by-hop and Host removed). */
  headers: HeaderList;
  timeoutMs: number;
  /** Opens the TCP connection (through the recorder's agent, so `--resolve` applies). */
  connect(host: string, port: number): net.Socket;
  /** Response headers as the client gets them (targets.clientHeaders). */
  clientHeaders(status: number, headers: HeaderList): HeaderList;
  /** The answer cannot be streamed here: forward the request the regular way (nothing was sent to the client). */
  fallback(): void;
  /** The exchange completed (the client has every byte, the body is verified and stored): write its fixture. */
  record(ex: BlobExchange): Promise<void>;
  /** The exchange did not complete; nothing was stored. */
  fail(why: string): void;
  /** Progress of the body once its length is known (record/progress.ts). */
  progress?(length: number): { add(n: number): void; end(recorded: boolean, stored?: string): void };
}

export class BlobStreams {
  private readonly hasher = new Hasher();

  constructor(private readonly store: BodyStore) {}

  /** A blob GET by digest to a plain-http upstream, without a request body. */
  takes(req: http.IncomingMessage, target: Target): boolean {
    if (req.method !== 'GET' || target.kind !== 'upstream' || !target.origin.startsWith('http:')) return false;
    if (req.headers['transfer-encoding'] || (req.headers['content-length'] && req.headers['content-length'] !== '0')) return false;
    // Only a whole blob hashes to its digest: ranged and conditional GETs take the regular path.
    if (req.headers.range || req.headers['if-range'] || req.headers['if-none-match'] || req.headers['if-modified-since']) return false;
    const route = routeOf(target.path);
    return route.kind === 'blob' && /^sha256:[0-9a-f]{64}$/.test(route.digest);
  }

  /** Forwards one blob GET; resolves once it was recorded, dropped, or given back (fallback). */
  forward(res: http.ServerResponse, f: BlobForward): Promise<void> {
    const route = routeOf(f.target.path) as { kind: 'blob'; digest: string };
    return new Promise<void>((settle) => new BlobGet(res, f, route.digest, this.store, this.hasher, settle).start());
  }

  close(): void {
    void this.hasher.close();
  }
}

/** One blob GET on its own upstream socket. */
class BlobGet {
  private upstream!: net.Socket;
  private head: Buffer = Buffer.alloc(0);
  private status = 0;
  private statusMessage = '';
  private headers: HeaderList = [];
  /** The headers as the client got them (and as the fixture records them). */
  private sent: HeaderList = [];
  private length = -1;
  private received = 0;
  private file?: HashedFile;
  /** Chunks read before the temp file was open. */
  private early: Buffer[] = [];
  private small: Buffer[] = [];
  private mode: 'head' | 'stream' | 'small' | 'done' = 'head';
  private transfer?: { add(n: number): void; end(recorded: boolean, stored?: string): void };
  private pauses = 0;
  /** The client has its whole answer (or was given back to the regular proxy): a close is no failure. */
  private finished = false;
  /** The exchange failed: nothing more happens to it. */
  private over = false;

  constructor(
    private readonly res: http.ServerResponse,
    private readonly f: BlobForward,
    private readonly digest: string,
    private readonly store: BodyStore,
    private readonly hasher: Hasher,
    private readonly settle: () => void,
  ) {}

  start(): void {
    const u = new URL(this.f.target.origin);
    const lines = [`GET ${this.f.target.path} HTTP/1.1`, `Host: ${u.host}`];
    for (const [n, v] of this.f.headers) lines.push(`${n}: ${v}`);
    lines.push('Connection: close', '', '');
    this.upstream = this.f.connect(u.hostname.replace(/^\[|\]$/g, ''), Number(u.port || 80));
    this.upstream.setNoDelay(true);
    this.upstream.setTimeout(this.f.timeoutMs, () => this.upstreamFailed(Object.assign(new Error('upstream timeout'), { code: 'ETIMEDOUT' })));
    this.upstream.on('error', (e) => this.upstreamFailed(e));
    this.upstream.on('data', (c: Buffer) => this.onData(c));
    this.upstream.on('end', () => this.onEnd());
    this.upstream.write(lines.join('\r\n'));
    this.res.on('close', () => {
      // A response that finished also closes (Node 24 emits it before the store's rename is done): not a drop.
      if (!this.finished && !this.res.writableFinished) this.drop('connection closed before the exchange completed');
    });
  }

  private onData(c: Buffer): void {
    if (this.mode === 'head') {
      this.head = this.head.length ? Buffer.concat([this.head, c]) : c;
      const end = this.head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.head.length > MAX_HEAD) this.giveBack();
        return;
      }
      if (!this.parseHead(this.head.subarray(0, end).toString('latin1'))) return this.giveBack();
      const rest = this.head.subarray(end + 4);
      this.head = Buffer.alloc(0);
      this.begin();
      if (rest.length) this.onData(rest);
      return;
    }
    this.transfer?.add(c.length);
    if (this.mode === 'small') {
      this.received += c.length;
      if (this.received > this.length) return this.drop('upstream sent more than its Content-Length');
      this.small.push(c);
      if (this.received === this.length) void this.finishSmall();
      return;
    }
    if (this.mode !== 'stream') return;
    if (this.received + c.length > this.length) return this.drop('upstream sent more than its Content-Length');
    this.received += c.length;
    if (!this.file) {
      this.early.push(c);
      return;
    }
    this.toFile(c);
    if (this.received === this.length) return void this.finishStream(c);
    this.toClient(c);
  }

  /** Status line and headers; false when this module should not handle the answer. */
  private parseHead(text: string): boolean {
    const lines = text.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0]);
    if (!m) return false;
    this.status = Number(m[1]);
    this.statusMessage = m[2] ?? '';
    let length: string | undefined;
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i <= 0) return false;
      const name = line.slice(0, i).trim();
      const value = line.slice(i + 1).trim();
      const lower = name.toLowerCase();
      if (lower === 'transfer-encoding' || lower === 'content-encoding') return false;
      if (lower === 'content-length') {
        if (length !== undefined && length !== value) return false;
        length = value;
      }
      if (!HOP_BY_HOP.has(lower)) this.headers.push([lower, value]);
    }
    if (this.status < 200 || this.status === 204 || this.status === 304) return false;
    if (length === undefined || !/^\d+$/.test(length)) return false;
    this.length = Number(length);
    return this.status === 200 || this.length <= MAX_SMALL;
  }

  private begin(): void {
    const flat: string[] = [];
    this.sent = this.f.clientHeaders(this.status, this.headers);
    this.transfer = this.f.progress?.(this.length);
    for (const [n, v] of this.sent) flat.push(n, v);
    this.res.writeHead(this.status, this.statusMessage, flat);
    if (this.status !== 200 || this.length < MAX_SMALL) {
      this.mode = 'small';
      if (this.length === 0) void this.finishSmall();
      return;
    }
    this.mode = 'stream';
    this.pause();
    this.hasher.open(this.store.tmpDir).then(
      (file) => {
        this.file = file;
        if (this.mode === 'done') return void file.abort();
        const early = this.early;
        this.early = [];
        for (const c of early) this.toFile(c);
        const last = this.received === this.length ? early.pop() : undefined;
        for (const c of early) this.toClient(c);
        if (last) return void this.finishStream(last);
        this.resume();
      },
      (e: NodeJS.ErrnoException) => this.drop(`cannot keep the body in ${this.store.dir}: ${e.code ?? e.message}`),
    );
  }

  private toFile(c: Buffer): void {
    if (!this.file!.write(c)) {
      this.pause();
      this.file!.onDrain(() => this.resume());
    }
  }

  private toClient(c: Buffer): void {
    if (!this.res.write(c)) {
      this.pause();
      this.res.once('drain', () => this.resume());
    }
  }

  private pause(): void {
    if (this.pauses++ === 0) this.upstream.pause();
  }
  private resume(): void {
    if (--this.pauses === 0 && this.mode !== 'done') this.upstream.resume();
  }

  /** Every byte arrived: verify the digest, then give the client its last chunk, then store and record. */
  private async finishStream(last: Buffer): Promise<void> {
    this.mode = 'done';
    this.upstream.destroy();
    const file = this.file!;
    let got: { digest: string; size: number };
    try {
      got = await file.end();
    } catch (e) {
      this.res.destroy();
      return this.fail(`cannot keep the body in ${this.store.dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, file);
    }
    if (this.over) return void (await fsp.rm(file.file, { force: true }).catch(() => undefined));
    if (got.digest !== this.digest || got.size !== this.length) {
      // The client must not get a complete body that is not the blob it asked for.
      this.res.destroy();
      return this.fail(`body does not match its digest: ${got.digest} (${got.size} bytes) for ${this.digest}`, file);
    }
    if (this.res.destroyed) return this.fail('connection closed before the exchange completed', file);
    this.res.end(last);
    try {
      await new Promise<void>((resolve, reject) => {
        if (this.res.writableFinished) return resolve();
        this.res.once('finish', resolve);
        this.res.once('close', () => (this.res.writableFinished ? resolve() : reject(new Error('closed'))));
      });
    } catch {
      return this.fail('connection closed before the exchange completed', file);
    }
    if (this.over) return;
    this.finished = true;
    try {
      await adopt(this.store, file.file, got.digest, got.size);
    } catch (e) {
      await fsp.rm(file.file, { force: true }).catch(() => undefined);
      this.f.fail(`cannot keep the body in ${this.store.dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      return this.settle();
    }
    await this.f.record({ status: this.status, statusMessage: this.statusMessage, headers: this.sent, body: { kind: 'stored', digest: got.digest, size: got.size } }).catch(() => undefined);
    this.transfer?.end(true, got.digest);
    this.settle();
  }

  /** A small non-200 answer, read whole: sent on, then recorded through the regular sink. */
  private async finishSmall(): Promise<void> {
    this.mode = 'done';
    this.upstream.destroy();
    const bytes = Buffer.concat(this.small);
    this.small = [];
    if (this.status === 200) {
      const got = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
      if (got !== this.digest) {
        this.res.destroy();
        return this.fail(`body does not match its digest: ${got} (${bytes.length} bytes) for ${this.digest}`);
      }
    }
    this.res.end(bytes);
    this.finished = true;
    // As the regular proxy keeps it: text answers (errors) inline, anything else in the store.
    const sink = this.store.sink({ inlineText: isTextContentType(headerValue(this.headers, 'content-type')) });
    sink.end(bytes);
    try {
      await new Promise<void>((resolve, reject) => {
        sink.once('finish', resolve);
        sink.once('error', reject);
      });
      const body = await sink.commit();
      await this.f.record({ status: this.status, statusMessage: this.statusMessage, headers: this.sent, body });
      this.transfer?.end(true, body.kind === 'stored' ? body.digest : undefined);
    } catch (e) {
      await sink.discard();
      this.transfer?.end(false);
      this.f.fail(`cannot keep the body in ${this.store.dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    this.settle();
  }

  private onEnd(): void {
    if (this.mode === 'head') return this.giveBack();
    // Connection: close: the end follows the last byte; before it, the body is short.
    if (this.mode !== 'done' && this.received < this.length) this.drop('upstream closed before the whole body arrived');
  }

  /** Nothing sent to the client yet: the regular proxy takes the request (sending the GET again). */
  private giveBack(): void {
    this.mode = 'done';
    this.finished = true;
    this.upstream.destroy();
    this.f.fallback();
    this.settle();
  }

  private upstreamFailed(e: NodeJS.ErrnoException): void {
    if (this.mode === 'done') return;
    if (this.mode === 'head' && !this.res.headersSent) {
      // As the regular proxy does: no answer from upstream is a 502 (504 on a timeout), never a recording.
      this.mode = 'done';
      this.finished = true;
      this.upstream.destroy();
      const timedOut = e.code === 'ETIMEDOUT';
      const message = timedOut
        ? `regtape: upstream ${this.f.target.origin} timed out: no answer within ${this.f.timeoutMs} ms`
        : `regtape: upstream ${this.f.target.origin} failed: ${e.code ?? e.message}`;
      const body = JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message, detail: null }] });
      this.res.writeHead(timedOut ? 504 : 502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      this.res.end(body);
      this.f.fail(timedOut ? `timeout after ${this.f.timeoutMs} ms` : (e.code ?? e.message));
      return this.settle();
    }
    this.drop(e.code === 'ETIMEDOUT' ? `timeout after ${this.f.timeoutMs} ms` : (e.code ?? e.message));
  }

  /** The exchange cannot complete: cut both sides, keep nothing. */
  private drop(why: string): void {
    if (this.over || this.finished) return;
    const file = this.file;
    this.mode = 'done';
    this.finished = true;
    this.upstream.destroy();
    this.res.destroy();
    void this.fail(why, file);
  }

  private async fail(why: string, file?: HashedFile): Promise<void> {
    if (this.over) return;
    this.over = true;
    this.transfer?.end(false);
    await file?.abort().catch(() => undefined);
    this.f.fail(why);
    this.settle();
  }
}

/** Moves a verified temp file into the store under its digest (the store may hold it already). */
async function adopt(store: BodyStore, tmp: string, digest: string, size: number): Promise<void> {
  const target = store.pathFor(digest);
  await fsp.mkdir(path.dirname(target), { recursive: true });
  const exists = await fsp.stat(target).then((s) => s.size === size, () => false);
  if (exists) await fsp.rm(tmp, { force: true });
  else await fsp.rename(tmp, target);
}
