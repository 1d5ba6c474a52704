/**
 * Writing recorded exchanges as fixtures: redaction, placeholders for per-run values, the file name
 * from the request's identity, sequence numbers, and an atomic write.
 */
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { Body, Exchange, HeaderList } from '../fixture/model';
import { fileSequence, FixtureFormat, fixtureFileName, serialize, writeFileAtomic, writeFileNew } from '../fixture/files';
import { requestIdentity } from '../fixture/identity';
import { routeOf } from '../registry/routes';
import { placeholderUploads, UPLOAD_ID } from '../registry/uploads';
import { credentialsIn, Redactor } from './redact';
import { toPlaceholder } from './rewrite';

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
  /** The proxy's origin as the client saw it: stored as the placeholder. */
  liveOrigin: string;
  /** Token endpoint answers: every JSON token field is redacted. */
  secret: boolean;
  /** Where it came from, for the fixture's comment line. */
  from: string;
}

export interface WriterOptions {
  out: string;
  format: FixtureFormat;
  redactor: Redactor;
  /** Replace what the folder holds for a request recorded again, instead of appending to its sequence. */
  overwrite?: boolean;
  log: (line: string) => void;
}

export class FixtureWriter {
  private readonly written: string[] = [];
  /** Without --overwrite a request recorded again is appended as the next in its sequence. */
  private readonly sessionSeen = new Map<string, number>();

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

  /** Redacts and writes one exchange; returns the exchange as written and its file. */
  async write(c: CapturedExchange): Promise<{ exchange: Exchange; file: string; hits: number }> {
    const { redactor, out, format } = this.opts;
    const reqBody = redactBody(c.reqBody, (t) => redactor.redactForm(t));
    const resBody = redactBody(c.resBody, (t) => (c.secret || looksLikeTokenResponse(c.url) ? redactor.redactJson(t) : t));
    const recordedUrl = placeholderUploads(redactor.redactUrl(c.url));
    const request = { method: c.method, url: recordedUrl, headers: redactor.redactHeaders(c.reqHeaders), body: reqBody };
    const exchange: Exchange = {
      comments: [`${c.method} ${recordedUrl} -> ${c.status}`, `recorded by regtape from ${c.from}`],
      request,
      response: { status: c.status, headers: uploadPlaceholders(redactor.redactHeaders(toPlaceholder(c.resHeaders, c.liveOrigin))), body: resBody },
    };
    const identity = requestIdentity({ ...request, form: reqBody.kind === 'inline' ? reqBody.text : undefined });
    const base = fixtureFileName(c.method, recordedUrl, identity, 1, format);
    const scrubbed = redactor.scrub(serialize([exchange], format), credentialsIn(c.reqHeaders));
    let seq = this.nextSequence(base);
    let file = path.join(out, fixtureFileName(c.method, recordedUrl, identity, seq, format));
    if (this.opts.overwrite) await writeFileAtomic(file, scrubbed.text);
    else {
      // Never replace a file: if that number was taken meanwhile (another process), take the next.
      while (!(await writeFileNew(file, scrubbed.text))) {
        seq = this.nextSequence(base);
        file = path.join(out, fixtureFileName(c.method, recordedUrl, identity, seq, format));
      }
    }
    if (scrubbed.hits) this.opts.log(`regtape: redacted ${scrubbed.hits} more secret(s) in ${path.basename(file)}`);
    this.written.push(file);
    if (seq === 1 && this.opts.overwrite) await removeOlderSequence(out, base, new Set(this.written));
    return { exchange, file, hits: scrubbed.hits };
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

function redactBody(body: Body, f: (text: string) => string): Body {
  return body.kind === 'inline' ? { kind: 'inline', text: f(body.text) } : body;
}

/** A registry whose realm is on itself and was not rewritten still must not leak its tokens. */
function looksLikeTokenResponse(url: string): boolean {
  const kind = routeOf(url.split('?')[0]).kind;
  return kind === 'other' || kind === 'ping';
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
