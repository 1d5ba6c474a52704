/**
 * Writing recorded exchanges as fixtures: redaction, placeholders for per-run values, the file name
 * from the request's identity, sequence numbers, and an atomic write.
 */
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { Body, Exchange, HeaderList, RecordedResponse } from '../fixture/model';
import { fileSequence, FixtureFormat, fixtureFileName, serialize, writeFileAtomic, writeFileNew } from '../fixture/files';
import { requestIdentity } from '../fixture/identity';
import { routeOf } from '../registry/routes';
import { placeholderUploads, UPLOAD_ID } from '../registry/uploads';
import { Redactor } from './redact';
import { toPlaceholder } from './rewrite';
import { describeOrigin, normaliseNoise } from './noise';

/** One completed exchange as the proxy saw it, before redaction. */
export interface CapturedExchange {
  method: string;
  /** Path and query as the client sent them. */
  url: string;
  /** Request headers as sent on (hop-by-hop and Host removed). */
  reqHeaders: HeaderList;
  reqBody: Body;
  status: number;
  /** Response headers as the client got them (already pointed at the proxy). */
  resHeaders: HeaderList;
  resBody: Body;
  /** The proxy's origin as the client saw it: stored as the placeholder ('' when nothing was rewritten). */
  liveOrigin: string;
  /** Token endpoint answers: every JSON token field is redacted. */
  secret: boolean;
  /** `secret` is the recorder's final word (the forward proxy knows realms and redirect targets), not to be second-guessed from the URL. */
  decided?: boolean;
  /** Where it came from, for the fixture's comment line. */
  from: string;
}

export interface WriterOptions {
  out: string;
  format: FixtureFormat;
  redactor: Redactor;
  /** Replace what the folder holds for a request recorded again, instead of appending to its sequence. */
  overwrite?: boolean;
  /** Write per-run values (dates, token times, Accept order, local ports) as they were (noise.ts). */
  keepNoise?: boolean;
  log: (line: string) => void;
}

/** The last answer written for a fixture base name in this session: a repeat of it raises its count. */
interface LastWritten {
  file: string;
  exchange: Exchange;
  /** sha256 of the answer (status, headers, body) as written. */
  answer: string;
  credentials: Set<string>;
}

/** Bases whose last answer is remembered (most recent first out): bounds memory; past it a repeat gets its own file. */
const LAST_MAX = 1000;

export class FixtureWriter {
  private readonly written: string[] = [];
  /** Without --overwrite a request recorded again is appended as the next in its sequence. */
  private readonly sessionSeen = new Map<string, number>();
  private readonly last = new Map<string, LastWritten>();
  /** Writes of one base name happen in order: a repeat rewrites the file the previous one wrote. */
  private readonly queues = new Map<string, Promise<unknown>>();

  private constructor(
    private readonly opts: WriterOptions,
    /** Highest sequence number per fixture base name already in the folder. */
    private readonly sequences: Map<string, number>,
  ) {}

  static async open(opts: WriterOptions): Promise<FixtureWriter> {
    return new FixtureWriter(opts, await existingSequences(opts.out));
  }

  files(): string[] {
    return [...this.written];
  }

  /**
   * Redacts, normalises and writes one exchange; returns the exchange as written, its file, and how
   * many times in a row that answer has now been recorded (a repeat rewrites the file with its count).
   */
  write(c: CapturedExchange): Promise<{ exchange: Exchange; file: string; hits: number; times: number }> {
    const { redactor, out, format } = this.opts;
    const reqBody = redactBody(c.reqBody, (t) => redactor.redactForm(t));
    // Token answers fail closed (redact.ts); redirects and errors may carry signed URLs in their text.
    const tokenResponse = c.secret || (!c.decided && isTokenLikeUrl(c.url));
    const resBody = redactBody(c.resBody, (t) => (tokenResponse ? redactor.redactTokenAnswer(t) : c.status >= 300 ? redactor.redactUrlsIn(t) : t));
    const redactedUrl = placeholderUploads(redactor.redactUrl(c.url));
    const resHeaders = uploadPlaceholders(redactor.redactHeaderUrls(redactor.redactHeaders(c.liveOrigin ? toPlaceholder(c.resHeaders, c.liveOrigin) : c.resHeaders)));
    // What the request carried (its token, password, cookie, query token), wherever the answer echoes it.
    const credentials = redactor.requestSecrets(c.reqHeaders, c.url, c.reqBody.kind === 'inline' ? c.reqBody.text : undefined);
    let echoes = 0;
    const clean = (text: string): string => {
      const r = redactor.scrub(text, credentials);
      echoes += r.hits;
      return r.text;
    };
    let exchange: Exchange = {
      request: { method: c.method, url: redactedUrl, headers: redactor.redactHeaders(c.reqHeaders).map(([n, v]) => [n, clean(v)]), body: redactBody(reqBody, clean) },
      response: { status: c.status, headers: resHeaders.map(([n, v]) => [n, clean(v)]), body: redactBody(resBody, clean) },
    };
    if (!this.opts.keepNoise) exchange = normaliseNoise(exchange, c.liveOrigin, tokenResponse);
    exchange.response = lengthOfWritten(exchange.response!, c.resBody);
    const request = exchange.request;
    const recordedUrl = request.url;
    exchange.comments = [`${c.method} ${recordedUrl} -> ${c.status}`, `recorded by regtape from ${this.opts.keepNoise ? c.from : describeOrigin(c.from)}`];
    const identity = requestIdentity({ ...request, form: reqBody.kind === 'inline' ? reqBody.text : undefined });
    const base = fixtureFileName(c.method, recordedUrl, identity, 1, format);
    const answer = createHash('sha256').update(JSON.stringify(exchange.response)).digest('hex');
    const previous = this.queues.get(base) ?? Promise.resolve();
    const job = previous.then(async () => {
      const last = this.last.get(base);
      if (last && last.answer === answer) {
        // The same answer again: one file with a count, not a copy per request (lossless: [A, A, B] is `A x2, B`).
        last.exchange.times = (last.exchange.times ?? 1) + 1;
        for (const cred of credentials) last.credentials.add(cred);
        await this.writeScrubbed(last.file, last.exchange, [...last.credentials]);
        return { exchange: last.exchange, file: last.file, hits: 0, times: last.exchange.times };
      }
      const text = this.scrubbed(exchange, credentials);
      let seq = this.nextSequence(base);
      let file = path.join(out, fixtureFileName(c.method, recordedUrl, identity, seq, format));
      if (this.opts.overwrite) await writeFileAtomic(file, text.text);
      else {
        // Never replace a file: if that number was taken meanwhile (another process), take the next.
        while (!(await writeFileNew(file, text.text))) {
          seq = this.nextSequence(base);
          file = path.join(out, fixtureFileName(c.method, recordedUrl, identity, seq, format));
        }
      }
      const hits = text.hits + echoes;
      if (hits) this.opts.log(`regtape: redacted ${hits} more secret(s) in ${path.basename(file)}`);
      this.written.push(file);
      this.last.delete(base);
      this.last.set(base, { file, exchange, answer, credentials: new Set(credentials) });
      if (this.last.size > LAST_MAX) this.last.delete(this.last.keys().next().value!);
      if (seq === 1 && this.opts.overwrite) await removeOlderSequence(out, base, new Set(this.written));
      return { exchange, file, hits, times: 1 };
    });
    // A failed write must not block the next one of the same name.
    const tail = job.then(
      () => undefined,
      () => undefined,
    );
    this.queues.set(base, tail);
    // Forget finished queues: the map holds only writes in flight.
    void tail.then(() => this.queues.get(base) === tail && this.queues.delete(base));
    return job;
  }

  private scrubbed(exchange: Exchange, credentials: string[]): { text: string; hits: number } {
    return this.opts.redactor.scrub(serialize([exchange], this.opts.format), credentials);
  }

  /** Rewrites this session's own file (a repeat raised its count). */
  private async writeScrubbed(file: string, exchange: Exchange, credentials: string[]): Promise<number> {
    const scrubbed = this.scrubbed(exchange, credentials);
    if (scrubbed.hits) this.opts.log(`regtape: redacted ${scrubbed.hits} more secret(s) in ${path.basename(file)}`);
    await writeFileAtomic(file, scrubbed.text);
    return scrubbed.hits;
  }

  private nextSequence(base: string): number {
    const inSession = this.sessionSeen.get(base);
    const seq = inSession !== undefined ? inSession + 1 : this.opts.overwrite ? 1 : (this.sequences.get(base) ?? 0) + 1;
    this.sessionSeen.set(base, seq);
    return seq;
  }
}

/** Upload session ids and `_state` differ on every run: stored as placeholders (registry/uploads.ts). */
function uploadPlaceholders(headers: HeaderList): HeaderList {
  return headers.map(([n, v]) => {
    const lower = n.toLowerCase();
    if (lower === 'docker-upload-uuid') return [n, UPLOAD_ID];
    if (lower === 'location') return [n, placeholderUploads(v)];
    return [n, v];
  });
}

/** A body changed by redaction or normalisation: its Content-Length says what the fixture holds. */
function lengthOfWritten(r: RecordedResponse, captured: Body): RecordedResponse {
  if (r.body.kind !== 'inline' || captured.kind !== 'inline' || r.body.text === captured.text) return r;
  const n = String(Buffer.byteLength(r.body.text));
  return { ...r, headers: r.headers.map(([k, v]) => (k.toLowerCase() === 'content-length' ? [k, n] : [k, v])) };
}

function redactBody(body: Body, f: (text: string) => string): Body {
  return body.kind === 'inline' ? { kind: 'inline', text: f(body.text) } : body;
}

/**
 * Not a registry route: a token endpoint on the registry's own host that a client called directly
 * (its realm not rewritten) must not leak its tokens either. The proxy keeps such bodies in memory only.
 */
export function isTokenLikeUrl(url: string): boolean {
  const kind = routeOf(url.split('?')[0]).kind;
  return kind === 'other'; // not ping: /v2/ answers {} or a registry error, never a token
}

/** Removes `base.2.md`, `base.3.md`, ... left from an earlier recording (--overwrite). */
async function removeOlderSequence(dir: string, base: string, keep: Set<string>): Promise<void> {
  for (const name of await fsp.readdir(dir)) {
    const f = fileSequence(name);
    const file = path.join(dir, name);
    if (f.base === base && f.seq > 1 && !keep.has(file)) await fsp.rm(file, { force: true });
  }
}

/** Highest sequence number per fixture base name already in the folder: a new recording appends. */
async function existingSequences(dir: string): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  const entries = await fsp.readdir(dir).catch(() => [] as string[]);
  for (const name of entries) {
    const { base, seq } = fileSequence(name);
    if (seq > (m.get(base) ?? 0)) m.set(base, seq);
  }
  return m;
}
