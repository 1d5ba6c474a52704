/**
 * The replaying registry as a request handler, without a server of its own: fixtures in, registry
 * answers out. One dispatch; each concern in its own file (match, derive, push, faults, send,
 * unmatched). All state is per instance: a fresh run is `reset()`, not a restart.
 */
import * as http from 'node:http';
import { randomUUID } from 'node:crypto';
import { LoadedExchange } from '../fixture/files';
import { RequestView, withOwnOriginAsPlaceholder } from '../fixture/identity';
import { FixtureFormat } from '../fixture/files';
import { rawHeaderList } from '../http/server';
import { requestOrigin } from '../http/tls';
import { errorBody } from '../registry/errors';
import { routeOf, unknownCode } from '../registry/routes';
import { createRecorder, Recorder } from '../record/proxy';
import { RedactOptions, Redactor } from '../record/redact';
import { RegistryView } from './derive';
import { FaultInjector, FaultRule } from './faults';
import { Matcher } from './match';
import { PushState, Refusal } from './push';
import { BodyCache, flatten, Req, serveExchange } from './send';
import { Unmatched, UnmatchedRequest } from './unmatched';
import { RunState } from './state';

export interface ReplayerOptions {
  /** One line per request on this function (default: none); `level` 'warn' for misses, refusals and errors. */
  log?: (line: string, level?: 'request' | 'warn') => void;
  /** No `log` line per request served (misses, refusals and errors are still logged). */
  quiet?: boolean;
  /** Serve what is recorded; forward what is not to this upstream and record it (VCR's new_episodes). */
  recordMissing?: { allowHosts?: string[]; upstream: string; out: string; format?: FixtureFormat; redact?: RedactOptions; store?: string; resolve?: string[]; upstreamCa?: string };
  /** Delay every answer: fixed milliseconds, or a [min, max] range drawn uniformly. */
  latency?: number | [number, number];
  /** Registry faults to inject (replay/faults.ts). */
  faults?: FaultRule[];
  /** Called once per request answered, with what /__regtape/requests lists; replaces its `log` line. */
  onRequest?: (r: ServedRequest) => void;
}

/** One request as the control API's /__regtape/requests lists it. */
export interface ServedRequest {
  time: string;
  method: string;
  url: string;
  status: number;
  bytes: number;
  ms: number;
  /** What answered: `file:line` of the fixture, `(derived)`, or why nothing did. */
  answer: string;
  outcome: 'served' | 'derived' | 'unmatched' | 'refused' | 'fault' | 'forwarded' | 'recording';
}

export interface ReplaySummary {
  /** Requests answered (from a fixture, or derived from the recording). */
  served: number;
  /** Each distinct unmatched request once, with its count and the nearest recordings. */
  unmatched: UnmatchedRequest[];
  /** All unmatched requests, repeats included. */
  unmatchedTotal: number;
  unused: LoadedExchange[];
  recorded: string[];
}

/** Recent requests kept for the control API: the newest this many. */
export const RECENT_MAX = 500;

/** Registries cap manifests at 4 MiB (distribution's default). */
const MAX_MANIFEST = 4 * 1024 * 1024;

export class Replayer {
  private matcher: Matcher;
  private pushes: PushState;
  private derived: RegistryView;
  private state: RunState;
  private faults: FaultInjector;
  private readonly exchanges: LoadedExchange[];
  private readonly unmatched = new Unmatched();
  private readonly cache = new BodyCache();
  private readonly recentRing: ServedRequest[] = [];
  private servedCount = 0;
  private readonly log: (line: string, level?: 'request' | 'warn') => void;
  private readonly latency?: [number, number];
  private readonly redactor: Redactor;

  private constructor(
    exchanges: LoadedExchange[],
    private readonly opts: ReplayerOptions,
    private readonly recorder: Recorder | undefined,
  ) {
    this.exchanges = [...exchanges];
    this.log = opts.log ?? ((): void => undefined);
    this.redactor = new Redactor(opts.recordMissing?.redact);
    this.latency = typeof opts.latency === 'number' ? [opts.latency, opts.latency] : opts.latency;
    this.matcher = new Matcher(this.exchanges);
    this.state = new RunState();
    this.pushes = new PushState(this.exchanges, this.state);
    this.derived = new RegistryView(this.exchanges, this.state, !this.recorder);
    this.faults = new FaultInjector(opts.faults ?? [], () => this.derived.challengeHeader());
  }

  static async create(exchanges: LoadedExchange[], opts: ReplayerOptions = {}): Promise<Replayer> {
    let self: Replayer | undefined;
    const rm = opts.recordMissing;
    const recorder = rm
      ? await createRecorder({
          upstream: rm.upstream,
          out: rm.out,
          format: rm.format,
          redact: rm.redact,
          allowHosts: rm.allowHosts,
          store: rm.store,
          resolve: rm.resolve,
          upstreamCa: rm.upstreamCa,
          log: opts.log && ((line: string) => opts.log?.(line, 'request')),
          onRecorded: (ex) => self?.add({ ...ex, store: recorderStore! }),
        })
      : undefined;
    const recorderStore = recorder?.store;
    self = new Replayer(exchanges, opts, recorder);
    return self;
  }

  /** Exchanges it can serve. */
  get size(): number {
    return this.matcher.size;
  }

  /** Requests captured without an answer (the seed's `auth` section): loaded, not servable. */
  get unservable(): LoadedExchange[] {
    return this.matcher.unservable;
  }

  /** An exchange recorded while serving (--record-missing) joins the index. */
  add(ex: LoadedExchange): void {
    this.exchanges.push(ex);
    this.matcher.add(ex);
    this.derived.add(ex);
    this.pushes.add(ex);
  }

  served(): number {
    return this.servedCount;
  }
  unmatchedRequests(): UnmatchedRequest[] {
    return this.unmatched.list();
  }
  unmatchedTotal(): number {
    return this.unmatched.total();
  }
  unused(): LoadedExchange[] {
    return this.matcher.unused();
  }
  recorded(): string[] {
    return this.recorder?.written() ?? [];
  }
  /** The newest requests, oldest first. */
  recent(): ServedRequest[] {
    return [...this.recentRing.slice(this.recentNext), ...this.recentRing.slice(0, this.recentNext)];
  }

  // The recent requests are a ring: no array shifting per request.
  private recentNext = 0;
  private remember(entry: ServedRequest): void {
    if (this.recentRing.length < RECENT_MAX) this.recentRing.push(entry);
    else {
      this.recentRing[this.recentNext] = entry;
      this.recentNext = (this.recentNext + 1) % RECENT_MAX;
    }
  }

  // An ISO time string per request costs more than the rest of the entry: made once per millisecond.
  private isoAt = 0;
  private iso = '';
  private isoNow(): string {
    const now = Date.now();
    if (now !== this.isoAt) {
      this.isoAt = now;
      this.iso = new Date(now).toISOString();
    }
    return this.iso;
  }

  /** A fresh run without a restart: counters, sequence positions, push and delete state, misses. */
  reset(): void {
    this.matcher = new Matcher(this.exchanges);
    this.state = new RunState();
    this.pushes = new PushState(this.exchanges, this.state);
    this.derived = new RegistryView(this.exchanges, this.state, !this.recorder);
    this.faults = new FaultInjector(this.opts.faults ?? [], () => this.derived.challengeHeader());
    this.unmatched.clear();
    this.recentRing.length = 0;
    this.recentNext = 0;
    this.servedCount = 0;
  }

  /** Waits for exchanges being recorded (--record-missing) and lets the recorder go. */
  async close(): Promise<void> {
    await this.recorder?.drain();
    this.recorder?.close();
  }

  /** Answers one registry request. Never throws: a bug costs one request, never the server. */
  handle(request: http.IncomingMessage, res: http.ServerResponse): void {
    const url = request.url ?? '/';
    const q = url.indexOf('?');
    const req = Object.assign(request, { originalUrl: url, path: q < 0 ? url : url.slice(0, q), method: request.method ?? 'GET' }) as Req;
    this.dispatch(req, res).catch((e: Error) => {
      this.log(`regtape: internal error on ${req.method} ${this.redactor.redactUrl(req.originalUrl)}: ${e.stack ?? e.message}`, 'warn');
      if (!res.headersSent) {
        const body = errorBody('UNKNOWN', `regtape: internal error: ${e.message}`);
        res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else res.destroy();
    });
  }

  private async dispatch(req: Req, res: http.ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    // Its own origin in the request (a mount's origin=, Origin, Referer) is matched as the placeholder.
    const view: RequestView = withOwnOriginAsPlaceholder({ method: req.method, url: req.originalUrl, headers: rawHeaderList(req.rawHeaders) }, requestOrigin(req));
    // Logs, the control API and the summary never show a query token or URL signature.
    const shown = this.redactor.redactUrl(req.originalUrl);
    const done = (status: number, bytes: number, outcome: ServedRequest['outcome'], answer = ''): void => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const entry: ServedRequest = { time: this.isoNow(), method: req.method, url: shown, status, bytes, ms: Math.round(ms * 10) / 10, answer, outcome };
      if (this.opts.onRequest) this.opts.onRequest(entry);
      else {
        const warn = outcome === 'unmatched' || outcome === 'refused';
        if (warn || !this.opts.quiet) {
          const note = outcome === 'served' || outcome === 'derived' ? '' : ' ' + outcome.toUpperCase();
          this.log(`${req.method} ${shown} ${status} ${bytes}B ${ms.toFixed(1)}ms${note}${answer ? ` <- ${answer}` : ''}`, warn ? 'warn' : 'request');
        }
      }
      this.remember(entry);
    };
    const refuse = (r: Refusal): void => {
      res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(r.body), 'docker-distribution-api-version': 'registry/2.0', 'x-regtape': 'refused' });
      res.end(r.body);
      const message = (JSON.parse(r.body) as { errors: Array<{ message: string }> }).errors[0].message;
      done(r.status, 0, 'refused', message);
    };
    const route = routeOf(req.path);
    const pushes = this.pushes;
    if (this.latency) {
      const [min, max] = this.latency;
      await new Promise((r) => setTimeout(r, min + Math.random() * (max - min)));
    }
    const fault = this.faults.active ? this.faults.check(view, route, requestOrigin(req)) : undefined;
    if (fault && 'respond' in fault) {
      req.resume();
      res.writeHead(fault.respond.status, flatten([...fault.respond.headers, ['Content-Length', String(Buffer.byteLength(fault.respond.body))]]));
      res.end(req.method === 'HEAD' ? undefined : fault.respond.body);
      return done(fault.respond.status, 0, 'fault');
    }
    const cutAfter = fault && 'cutAfter' in fault ? fault.cutAfter : undefined;
    const recorder = this.recorder;
    // With --record-missing, pushes to a repository the recording never pushed to go upstream untouched.
    const pushing = (route.kind === 'upload' && req.method !== 'DELETE') || (route.kind === 'manifest' && req.method === 'PUT');
    if (recorder && pushing && 'name' in route && !pushes.recordedPushTo(route.name)) {
      recorder.handle(req, res);
      return done(0, 0, 'forwarded');
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

    // A recorded answer in its place in the sequence wins. Past the recorded sequence, what this run
    // changed (a blob uploaded, a blob or manifest deleted) wins over repeating the last answer.
    const matched = this.matcher.matchInPlace(view);
    const changed = !matched.ex || matched.repeat ? this.runStateAnswer(req.method, route) : undefined;
    const recordedEx = changed ? undefined : matched.ex;
    const ex = recordedEx ?? changed ?? this.derived.answer(view, route);
    if (!ex && recorder) {
      recorder.handle(req, res, preread);
      return done(0, 0, 'recording');
    }
    if (!preread && !manifestBytes && !session) req.resume();
    if (!ex) {
      const request = `${view.method} ${shown}`;
      // Explained with the URL redacted: the values that differ are shown, and a query token must not be.
      const explain = (): ReturnType<Matcher['explain']> => ({ ...this.matcher.explain({ ...view, url: this.redactor.redactUrl(view.url) }), request });
      const miss = this.unmatched.add(request, explain) ?? explain();
      const hint = miss.nearest.length ? miss.nearest.map((n) => `${n.request} (${n.source}: ${n.why})`).join('; ') : 'no fixtures at all';
      const message = `regtape: no fixture for ${miss.request}; nearest recorded: ${hint}`;
      const body = errorBody(unknownCode(route), message, { regtape: 'unmatched', nearest: miss.nearest });
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0', 'x-regtape': 'unmatched' });
      res.end(req.method === 'HEAD' ? undefined : body);
      done(404, req.method === 'HEAD' ? 0 : Buffer.byteLength(body), 'unmatched', message);
      return;
    }
    if (manifestBytes && route.kind === 'manifest') {
      const refusal = pushes.checkManifest(manifestBytes, ex.request.body, route.name, route.reference);
      if (refusal) return refuse(refusal);
    }
    this.servedCount++;
    if (recordedEx) {
      pushes.answered(session, ex.response!.status);
      this.state.served(req.method, route, ex);
    }
    const answer = ex.source ? `${ex.source.file}:${ex.source.line}` : '(derived)';
    serveExchange(req, res, ex, this.cache, (line) => this.log(line, 'warn'), (s, b) => done(s, b, recordedEx ? 'served' : 'derived', recordedEx ? answer : `(derived from ${answer})`), (v) => pushes.fill(v, session), cutAfter);
  }

  /** What the registry says after this run's uploads and deletes, where that differs from the content. */
  private runStateAnswer(method: string, route: ReturnType<typeof routeOf>): LoadedExchange | undefined {
    if (method !== 'GET' && method !== 'HEAD') return undefined;
    return this.derived.deleted(route) ?? (method === 'HEAD' ? this.pushes.headOfUploaded(route, this.exchanges[0]?.store) : undefined);
  }
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
