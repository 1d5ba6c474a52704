/**
 * The replay server: fixtures in, registry answers out. Express serves; the Matcher decides;
 * bodies stream from the store.
 */
import { close as fsClose, createReadStream, open as fsOpen, read as fsRead, readFile } from 'node:fs';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import * as http from 'node:http';
import express from 'express';
import { HeaderList, ORIGIN_PLACEHOLDER } from '../fixture/model';
import { LoadedExchange, loadFixtures } from '../fixture/files';
import { HOP_BY_HOP, rawHeaderList, start } from '../http/server';
import { Matcher, Miss, RequestView } from './match';
import { errorBody } from '../registry/errors';
import { routeOf, unknownCode } from '../registry/routes';
import { freshTokenResponse } from '../registry/auth';
import { UPLOAD_ID, UPLOAD_STATE } from '../registry/uploads';
import { PushState, Refusal } from './push';
import { RegistryView } from './derive';
import { ByteRange, etagMatches, parseRange } from '../http/range';
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { FixtureFormat } from '../fixture/files';
import { BodyStore } from '../fixture/store';
import { createRecorder } from '../record/proxy';
import { RedactOptions } from '../record/redact';
import { FaultInjector, FaultRule } from './faults';

export interface ReplayOptions {
  /** Fixture folders and files. */
  fixtures: string | string[];
  port?: number;
  host?: string;
  /** One line per request on this function (default: none). */
  log?: (line: string) => void;
  /**
   * true: close() rejects when a request went unmatched; 'unused': also when a fixture was never used.
   * The CLI turns this into a non-zero exit.
   */
  strict?: boolean | 'unused';
  /** Serve what is recorded; forward what is not to this upstream and record it (VCR's new_episodes). */
  recordMissing?: { upstream: string; out?: string; format?: FixtureFormat; redact?: RedactOptions };
  /** Delay every answer: fixed milliseconds, or a [min, max] range drawn uniformly. */
  latency?: number | [number, number];
  /** Registry faults to inject (replay/faults.ts). */
  faults?: FaultRule[];
}

export interface ReplaySummary {
  served: number;
  unmatched: Miss[];
  unused: LoadedExchange[];
  recorded: string[];
}

/** close() of a strict replay server that saw unmatched requests (or unused fixtures). */
export class StrictReplayError extends Error {
  constructor(readonly summary: ReplaySummary) {
    super(
      [
        `regtape strict mode: ${summary.unmatched.length} unmatched request(s), ${summary.unused.length} unused fixture(s)`,
        ...summary.unmatched.map((m) => `  unmatched ${m.request}${m.nearest[0] ? ` (nearest: ${m.nearest[0].request}: ${m.nearest[0].why})` : ''}`),
        ...summary.unused.map((u) => `  unused ${u.request.method} ${u.request.url} (${u.source?.file}:${u.source?.line})`),
      ].join('\n'),
    );
    this.name = 'StrictReplayError';
  }
}

export interface ReplayServer {
  url: string;
  port: number;
  host: string;
  /** How many exchanges it can serve. */
  exchanges: number;
  /** Fixture files loaded. */
  files: string[];
  /** Requests captured without an answer (the seed's `auth` section): loaded, not servable. */
  unservable: LoadedExchange[];
  unmatched(): Miss[];
  unused(): LoadedExchange[];
  served(): number;
  /** Fixture files written by --record-missing. */
  recorded(): string[];
  summary(): ReplaySummary;
  /** Stops; with `strict`, rejects with StrictReplayError when the run broke the rule. */
  close(): Promise<void>;
}

/** Reads stored bodies in 1 MiB pieces: with the 64 KiB default a blob streams at half the speed. */
const READ_CHUNK = 1024 * 1024;
/** Registries cap manifests at 4 MiB (distribution's default). */
const MAX_MANIFEST = 4 * 1024 * 1024;

export async function replay(opts: ReplayOptions): Promise<ReplayServer> {
  const paths = Array.isArray(opts.fixtures) ? opts.fixtures : [opts.fixtures];
  const loaded = await loadFixtures(paths);
  const matcher = new Matcher(loaded.exchanges);
  const pushes = new PushState(loaded.exchanges);
  const derived = new RegistryView(loaded.exchanges);
  const misses: Miss[] = [];
  let served = 0;
  const log = opts.log ?? ((): void => undefined);
  const faults = new FaultInjector(opts.faults ?? [], () => derived.challengeHeader());
  const latency = typeof opts.latency === 'number' ? [opts.latency, opts.latency] : opts.latency;
  const firstDir = paths.find((p) => !/\.(md|markdown|txt|ya?ml)$/i.test(p)) ?? paths[0];
  const recorder = opts.recordMissing
    ? await createRecorder({
        upstream: opts.recordMissing.upstream,
        out: opts.recordMissing.out ?? firstDir,
        format: opts.recordMissing.format,
        redact: opts.recordMissing.redact,
        log,
        onRecorded: (ex) => {
          const loadedEx = { ...ex, store: new BodyStore(path.resolve(opts.recordMissing?.out ?? firstDir)) };
          matcher.add(loadedEx);
          derived.add(loadedEx);
          pushes.add(loadedEx);
        },
      })
    : undefined;

  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', false);
  app.use((request: http.IncomingMessage, res: http.ServerResponse) => {
    const req = request as Req;
    handle(req, res).catch((e: Error) => {
      // A bug must cost one request, never the server.
      process.stderr.write(`regtape: internal error on ${req.method} ${req.originalUrl}: ${e.stack ?? e.message}\n`);
      if (!res.headersSent) {
        const body = errorBody('UNKNOWN', `regtape: internal error: ${e.message}`);
        res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else res.destroy();
    });
  });
  const server = http.createServer(app);

  const handle = async (req: Req, res: http.ServerResponse): Promise<void> => {
    const started = process.hrtime.bigint();
    const view: RequestView = { method: req.method, url: req.originalUrl, headers: rawHeaderList(req.rawHeaders) };
    const done = (status: number, bytes: number, note = ''): void => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log(`${req.method} ${req.originalUrl} ${status} ${bytes}B ${ms.toFixed(1)}ms${note}`);
    };
    const refuse = (r: Refusal): void => {
      res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(r.body), 'docker-distribution-api-version': 'registry/2.0', 'x-regtape': 'refused' });
      res.end(r.body);
      process.stderr.write(`regtape: refused ${req.method} ${req.originalUrl}: ${JSON.parse(r.body).errors[0].message}\n`);
      done(r.status, 0, ' REFUSED');
    };
    const route = routeOf(req.path);
    if (latency) await new Promise((r) => setTimeout(r, latency[0] + Math.random() * (latency[1] - latency[0])));
    const fault = faults.active ? faults.check(view, route, `http://${req.headers.host ?? '127.0.0.1'}`) : undefined;
    if (fault && 'respond' in fault) {
      req.resume();
      res.writeHead(fault.respond.status, flatten([...fault.respond.headers, ['Content-Length', String(Buffer.byteLength(fault.respond.body))]]));
      res.end(req.method === 'HEAD' ? undefined : fault.respond.body);
      return done(fault.respond.status, 0, ' FAULT');
    }
    const cutAfter = fault && 'cutAfter' in fault ? fault.cutAfter : undefined;
    // With --record-missing, pushes to a repository the recording never pushed to go upstream untouched.
    const pushing = (route.kind === 'upload' && req.method !== 'DELETE') || (route.kind === 'manifest' && req.method === 'PUT');
    if (recorder && pushing && 'name' in route && !pushes.recordedPushTo(route.name)) {
      recorder.handle(req, res);
      return done(0, 0, ' FORWARDED');
    }
    let session: string | undefined;
    let manifestBytes: Buffer | undefined;
    let preread: Buffer | undefined;
    if (route.kind === 'token' && req.method === 'POST') {
      // The OAuth2 token POST carries its scope and service in the form body.
      preread = await readSmallBody(req, 64 * 1024);
      if (preread === undefined) return refuse({ status: 413, body: errorBody('SIZE_INVALID', 'regtape: token request body too large') });
      view.form = preread.toString('utf8');
    } else if (route.kind === 'upload' && req.method !== 'DELETE') {
      // A POST starts a session: its id goes into the Location handed out (registry/uploads.ts).
      session = req.method === 'POST' && !route.session ? randomUUID() : route.session ?? randomUUID();
      await pushes.receive(req, session);
      const digest = new URL(req.originalUrl, 'http://x').searchParams.get('digest');
      if (digest && (req.method === 'PUT' || req.method === 'POST')) {
        const refusal = pushes.finish(session, route, digest);
        if (refusal) return refuse(refusal);
      }
    } else if (route.kind === 'manifest' && req.method === 'PUT') {
      manifestBytes = await readSmallBody(req, MAX_MANIFEST);
      if (!manifestBytes) return refuse({ status: 413, body: errorBody('SIZE_INVALID', `regtape: manifest larger than ${MAX_MANIFEST} bytes`) });
    }

    if (route.kind === 'blob' && req.method === 'HEAD') {
      // After this run uploaded the blob, it exists, whatever the recording said before the push.
      const size = pushes.uploadedSize(route.name, route.digest);
      if (size !== undefined) {
        res.writeHead(200, { 'content-length': size, 'content-type': 'application/octet-stream', 'docker-content-digest': route.digest, 'docker-distribution-api-version': 'registry/2.0' });
        res.end();
        served++;
        return done(200, 0);
      }
    }
    const ex = matcher.match(view) ?? derived.answer(view, route);
    if (!ex && recorder) {
      recorder.handle(req, res, preread);
      return done(0, 0, ' RECORDING');
    }
    if (!preread && !manifestBytes && !session) req.resume();
    if (!ex) {
      const miss = matcher.explain(view);
      misses.push(miss);
      const hint = miss.nearest.length ? miss.nearest.map((n) => `${n.request} (${n.source}: ${n.why})`).join('; ') : 'no fixtures at all';
      const message = `regtape: no fixture for ${miss.request}; nearest recorded: ${hint}`;
      const body = errorBody(unknownCode(route), message, { regtape: 'unmatched', nearest: miss.nearest });
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0', 'x-regtape': 'unmatched' });
      res.end(req.method === 'HEAD' ? undefined : body);
      process.stderr.write(`${message}\n`);
      done(404, req.method === 'HEAD' ? 0 : Buffer.byteLength(body), ' UNMATCHED');
      return;
    }
    if (manifestBytes && route.kind === 'manifest') {
      const refusal = pushes.checkManifest(manifestBytes, ex.request.body, route.name, route.reference);
      if (refusal) return refuse(refusal);
    }
    served++;
    serveExchange(req, res, ex, done, (v) => pushes.fill(v, session), cutAfter);
  };

  let closing: Promise<void> | undefined;
  const summary = (): ReplaySummary => ({ served, unmatched: [...misses], unused: matcher.unused(), recorded: recorder?.written() ?? [] });
  const host = opts.host ?? '127.0.0.1';
  const { port, url } = await start(server, opts.port ?? 8000, host);
  return {
    url,
    port,
    host,
    exchanges: matcher.size,
    files: loaded.files,
    unservable: matcher.unservable,
    unmatched: () => [...misses],
    unused: () => matcher.unused(),
    served: () => served,
    recorded: () => recorder?.written() ?? [],
    summary,
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await recorder?.drain();
        server.closeAllConnections();
        await closed;
        recorder?.close();
        const s = summary();
        if ((opts.strict && s.unmatched.length) || (opts.strict === 'unused' && s.unused.length)) throw new StrictReplayError(s);
      })()),
  };
}

/** An incoming request with the two fields express used to add. */
type Req = http.IncomingMessage & { method: string; originalUrl: string; path: string };

/** Stored bodies up to this size are served from memory (manifests, configs, small layers). */
const CACHE_ITEM_MAX = 8 * 1024 * 1024;
/** At most this much memory for them, least recently used dropped first. */
const CACHE_TOTAL = 64 * 1024 * 1024;
const bodyCache = new Map<string, Buffer>();
let bodyCacheBytes = 0;
function cachedBody(file: string): Buffer | undefined {
  const b = bodyCache.get(file);
  if (b) {
    bodyCache.delete(file);
    bodyCache.set(file, b);
  }
  return b;
}
function rememberBody(file: string, b: Buffer): void {
  if (bodyCache.has(file)) return;
  bodyCache.set(file, b);
  bodyCacheBytes += b.length;
  for (const [k, v] of bodyCache) {
    if (bodyCacheBytes <= CACHE_TOTAL) break;
    bodyCache.delete(k);
    bodyCacheBytes -= v.length;
  }
}
/** Inline bodies as bytes, encoded once. */
const inlineBytes = new WeakMap<object, Buffer>();

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

function serveExchange(
  req: Req,
  res: http.ServerResponse,
  ex: LoadedExchange,
  done: (s: number, b: number) => void,
  fillUploads: (v: string) => string,
  cutAfter?: number,
): void {
  const out = ex.response!;
  const origin = `http://${req.headers.host ?? '127.0.0.1'}`;
  const headers: HeaderList = [];
  let body = out.body;
  if (body.kind === 'inline' && out.status === 200 && routeOf(req.path).kind === 'token') {
    const fresh = freshTokenResponse(body.text);
    if (fresh) body = { kind: 'inline', text: fresh };
  }
  for (const [n, v] of out.headers) {
    const lower = n.toLowerCase();
    if (HOP_BY_HOP.has(lower)) continue;
    // Content-Length follows the body we serve; a recorded HEAD (no body) keeps its recorded length.
    if (lower === 'content-length' && body.kind !== 'none') continue;
    let value = v.includes(ORIGIN_PLACEHOLDER) ? v.split(ORIGIN_PLACEHOLDER).join(origin) : v;
    if (value.includes(UPLOAD_ID) || value.includes(UPLOAD_STATE)) value = fillUploads(value);
    headers.push([n, value]);
  }
  const size = body.kind === 'inline' ? Buffer.byteLength(body.text) : body.kind === 'stored' ? body.size : 0;
  let status = out.status;
  let ranges: ByteRange[] | 'unsatisfiable' | undefined;
  if (status === 200 && (req.method === 'GET' || req.method === 'HEAD')) {
    const etag = headers.find(([n]) => n.toLowerCase() === 'etag')?.[1];
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
  // Go clients close as soon as they have Content-Length bytes, sometimes before 'finish': count what was read.
  let sent = 0;
  res.once('close', () => done(status, sent));
  if (parts.length === 1 && !parts[0].head && cutAfter === undefined) {
    // One body or one range, no fault: memory for what fits, a read loop for the rest.
    const r = parts[0].range;
    const send = (b: Buffer): void => {
      const chunk = r ? b.subarray(r.start, r.end + 1) : b;
      sent = chunk.length;
      res.end(chunk);
    };
    const fail = (e: Error): void => {
      // Headers are gone already: cut the connection so the client sees a short body, never a wrong one.
      process.stderr.write(`regtape: cannot read body ${body.kind === 'stored' ? body.digest : ''}: ${e.message}\n`);
      res.destroy();
    };
    if (body.kind === 'inline') {
      let b = body === out.body ? inlineBytes.get(body) : undefined;
      if (!b) {
        b = Buffer.from(body.text);
        if (body === out.body) inlineBytes.set(body, b);
      }
      return send(b);
    }
    if (body.kind === 'stored') {
      const file = ex.store.pathFor(body.digest);
      const size = body.size;
      if (size <= CACHE_ITEM_MAX) {
        const hit = cachedBody(file);
        if (hit) return send(hit);
        readFile(file, (e, b) => {
          if (e) return fail(e);
          if (b.length !== size) return fail(new Error(`the stored body has ${b.length} bytes, the fixture says ${size}`));
          rememberBody(file, b);
          send(b);
        });
        return;
      }
      sendFile(file, r ? r.start : 0, r ? r.end : size - 1, res, fail, (n) => (sent += n));
      return;
    }
  }
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
      if (body.kind === 'stored') process.stderr.write(`regtape: cannot read body ${body.digest}: ${(e as Error).message}\n`);
      res.destroy();
    }
  })();
}

function flatten(headers: HeaderList): string[] {
  const flat: string[] = [];
  for (const [n, v] of headers) flat.push(n, v);
  return flat;
}

/** Reads a request body of at most `limit` bytes; undefined when it is larger. */
function readSmallBody(req: http.IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= limit) chunks.push(c);
    });
    req.on('end', () => resolve(size <= limit ? Buffer.concat(chunks) : undefined));
    req.on('error', () => resolve(undefined));
  });
}
