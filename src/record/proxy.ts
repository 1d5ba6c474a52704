/**
 * The recording proxy: a reverse proxy (http-proxy) in front of the real registry. Bodies stream
 * both ways; a copy of each is hashed and kept on the fly; the exchange is written once both sides
 * completed, atomically. Anything that did not complete is dropped.
 *
 * Three kinds of target: the upstream registry; a token realm (`/__regtape/token/...`, after the
 * Bearer challenge was rewritten to point here); a redirect target (`/__regtape/redirect/...`, after
 * a blob redirect to a CDN was rewritten to point here).
 */
import httpProxy from 'http-proxy';
import * as http from 'node:http';
import * as https from 'node:https';
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { finished } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { Body, Exchange, HeaderList, headerValue } from '../fixture/model';
import { BodyStore, isTextContentType } from '../fixture/store';
import { fileSequence, FixtureFormat, fixtureFileName, removeStaleTempFiles, serialize, writeFileAtomic } from '../fixture/files';
import { HOP_BY_HOP, rawHeaderList, start, UserError } from '../http/server';
import { errorBody } from '../registry/errors';
import { pathToRealm, rewriteChallengeRealm } from '../registry/auth';
import { isRedirect, redirectPath, redirectTarget } from '../registry/redirect';
import { routeOf } from '../registry/routes';
import { placeholderUploads, UPLOAD_ID } from '../registry/uploads';
import { requestIdentity } from '../fixture/identity';
import { credentialsIn, Redactor, RedactOptions } from './redact';
import { rewriteLocationHeaders, toPlaceholder } from './rewrite';
import { tee } from './tee';

export interface RecordOptions {
  upstream?: string;
  out?: string;
  port?: number;
  host?: string;
  format?: FixtureFormat;
  redact?: RedactOptions;
  /** Idle time (ms) after which an upstream that stopped answering fails the request. Default 60 s. */
  upstreamTimeoutMs?: number;
  /** Check at start that the upstream answers (default true). */
  checkUpstream?: boolean;
  /** Replace what the folder holds for a request recorded again, instead of appending to its sequence. */
  overwrite?: boolean;
  /** Called with each exchange once its fixture is written. */
  onRecorded?: (ex: Exchange, file: string) => void;
  log?: (line: string) => void;
}

export interface RecordServer {
  url: string;
  port: number;
  host: string;
  upstream: string;
  out: string;
  /** Fixture files written so far. */
  written(): string[];
  /** Stops accepting, lets in-flight exchanges finish and be written, then resolves. */
  close(): Promise<void>;
}

export const DEFAULT_UPSTREAM = 'https://registry-1.docker.io';

interface Target {
  origin: string;
  /** Path and query to send there. */
  path: string;
  /** Token endpoints and CDNs: bodies may carry secrets or are followed-up downloads. */
  kind: 'upstream' | 'token' | 'redirect';
}

/** The recording proxy as a request handler, without a server of its own (replay --record-missing uses it). */
export interface Recorder {
  upstream: string;
  out: string;
  /**
   * Forwards and records one exchange. `body`: the request body when the caller already read it
   * (it is sent on and recorded as if it had been streamed).
   */
  handle(req: http.IncomingMessage, res: http.ServerResponse, body?: Buffer): void;
  written(): string[];
  /** Resolves when every exchange in flight has been written or dropped. */
  drain(): Promise<void>;
  close(): void;
}

export async function createRecorder(opts: RecordOptions): Promise<Recorder> {
  const upstream = parseUpstream(opts.upstream ?? DEFAULT_UPSTREAM);
  const out = path.resolve(opts.out ?? 'fixtures');
  const format = opts.format ?? 'md';
  const log = opts.log ?? ((): void => undefined);
  const redactor = new Redactor(opts.redact);
  await fsp.mkdir(out, { recursive: true }).catch((e: NodeJS.ErrnoException) => {
    throw new UserError(`cannot create the fixtures folder ${out}: ${e.code ?? e.message}`);
  });
  await fsp.access(out, 2 /* W_OK */).catch(() => {
    throw new UserError(`the fixtures folder ${out} is not writable`);
  });
  const store = new BodyStore(out);
  await store.cleanTemp();
  await removeStaleTempFiles(out);
  if (opts.checkUpstream !== false) await checkUpstream(upstream);

  const upstreamOrigins = new Set([upstream.origin]);
  const sequences = await existingSequences(out);
  /** Stable redirect path -> the signed URL it stands for. Only in memory: signatures never reach disk. */
  const redirects = new Map<string, string>();
  const written: string[] = [];
  const inflight = new Set<Promise<void>>();
  const agents = { 'http:': new http.Agent({ keepAlive: true }), 'https:': new https.Agent({ keepAlive: true }) };
  const proxy = httpProxy.createProxyServer({
    changeOrigin: true, // virtual-hosted registries (Hub, ghcr, quay) need their own Host and SNI
    secure: true,
    selfHandleResponse: true,
    xfwd: false,
  });
  const timeoutMs = opts.upstreamTimeoutMs ?? 60_000;
  // An upstream that stops answering (before or during the body) fails the request after timeoutMs idle.
  proxy.on('proxyReq', (proxyReq) => {
    proxyReq.setTimeout(timeoutMs, () => proxyReq.destroy(Object.assign(new Error('upstream timeout'), { code: 'ETIMEDOUT' })));
  });

  const targetOf = (url: string): Target | undefined => {
    const p = url.split('?')[0];
    const route = routeOf(p);
    if (route.kind === 'token') {
      const realm = pathToRealm(p);
      if (!realm) return undefined;
      const q = url.indexOf('?');
      const search = [realm.search.slice(1), q >= 0 ? url.slice(q + 1) : ''].filter(Boolean).join('&');
      return { origin: realm.origin, path: realm.pathname + (search ? '?' + search : ''), kind: 'token' };
    }
    if (route.kind === 'redirect') {
      const signed = redirects.get(p);
      const t = signed ? new URL(signed) : redirectTarget(p);
      if (!t) return undefined;
      return { origin: t.origin, path: t.pathname + t.search, kind: 'redirect' };
    }
    return { origin: upstream.origin, path: url, kind: 'upstream' };
  };

  /** Response headers as the client gets them: URLs on the upstream, realms and redirects turned to us. */
  const clientHeaders = (status: number, headers: HeaderList, target: Target, liveOrigin: string): HeaderList => {
    let h = headers;
    if (isRedirect(status)) {
      h = h.map(([n, v]) => {
        if (n.toLowerCase() !== 'location') return [n, v];
        let abs: URL;
        try {
          abs = new URL(v, target.origin + target.path);
        } catch {
          return [n, v];
        }
        // An ordinary redirect within the registry (no signed query) is rewritten like any Location below.
        if (upstreamOrigins.has(abs.origin) && !abs.search) return [n, v];
        const stable = redirectPath(abs);
        redirects.set(stable, abs.href);
        return [n, liveOrigin + stable];
      });
    }
    h = rewriteLocationHeaders(h, upstreamOrigins, liveOrigin);
    return h.map(([n, v]) => (n.toLowerCase() === 'www-authenticate' ? [n, rewriteChallengeRealm(v, liveOrigin)] : [n, v]));
  };

  const handle = (req: http.IncomingMessage, res: http.ServerResponse, preread?: Buffer): void => {
    try {
      forward(req, res, preread);
    } catch (e) {
      // A bug must cost one request, never the recorder.
      log(`regtape: internal error on ${req.method} ${req.url}: ${(e as Error).stack ?? e}`);
      if (!res.headersSent) {
        const body = errorBody('UNKNOWN', `regtape: internal error: ${(e as Error).message}`);
        res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else res.destroy();
    }
  };

  const forward = (req: http.IncomingMessage, res: http.ServerResponse, preread?: Buffer): void => {
    const started = process.hrtime.bigint();
    const liveOrigin = `http://${req.headers.host ?? `${opts.host ?? '127.0.0.1'}:${opts.port ?? 8000}`}`;
    const reqHeaders: HeaderList = rawHeaderList(req.rawHeaders).filter(([n]) => !HOP_BY_HOP.has(n) && n !== 'host');
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const target = targetOf(url);
    if (!target) {
      const body = errorBody('NAME_UNKNOWN', `regtape: ${url} is not a valid regtape token or redirect URL`);
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    const secret = target.kind === 'token';
    const reqSink = store.sink({ inlineText: secret || isTextContentType(headerValue(reqHeaders, 'content-type')), memoryOnly: secret });
    reqSink.on('error', (e) => log(`regtape: cannot keep the request body of ${method} ${url}: ${e.message}`));
    if (preread) reqSink.end(preread);
    else {
      req.on('data', (chunk: Buffer) => reqSink.write(chunk));
      req.on('end', () => reqSink.end());
    }

    let settle!: () => void;
    const job = new Promise<void>((r) => (settle = r));
    inflight.add(job);
    void job.then(() => inflight.delete(job));
    let resSink: ReturnType<BodyStore['sink']> | undefined;
    let failed = false;
    const fail = (why: string): void => {
      if (failed) return;
      failed = true;
      void Promise.all([reqSink.discard(), resSink?.discard()]).finally(settle);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log(`${method} ${url} FAILED ${why} ${ms.toFixed(0)}ms (not recorded)`);
    };

    if (target.kind === 'redirect') {
      // CDNs and object stores reject a second auth mechanism (S3: "Only one auth mechanism allowed").
      delete req.headers.authorization;
      delete req.headers.cookie;
    }
    req.url = target.path;
    const agent = target.origin.startsWith('https:') ? agents['https:'] : agents['http:'];
    proxy.web(req, res, { target: target.origin, agent, ...(preread ? { buffer: Readable.from([preread]) } : {}) }, (err: NodeJS.ErrnoException) => {
      const what = target.kind === 'upstream' ? 'upstream' : target.kind === 'token' ? 'token realm' : 'redirect target';
      const timedOut = err.code === 'ETIMEDOUT';
      const message = timedOut
        ? `regtape: ${what} ${target.origin} timed out: no answer within ${timeoutMs} ms`
        : `regtape: ${what} ${target.origin} failed: ${err.code ?? err.message}`;
      if (!res.headersSent) {
        const body = errorBody('UNAVAILABLE', message);
        res.writeHead(timedOut ? 504 : 502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else res.destroy();
      fail(timedOut ? `timeout after ${timeoutMs} ms` : (err.code ?? err.message));
    });

    onResponse.set(req, (proxyRes) => {
      const status = proxyRes.statusCode ?? 502;
      const upstreamHeaders = rawHeaderList(proxyRes.rawHeaders).filter(([n]) => !HOP_BY_HOP.has(n));
      const headers = clientHeaders(status, upstreamHeaders, target, liveOrigin);
      const flat: string[] = [];
      for (const [n, v] of headers) flat.push(n, v);
      res.writeHead(status, proxyRes.statusMessage, flat);
      const sink = store.sink({ inlineText: secret || isTextContentType(headerValue(upstreamHeaders, 'content-type')), memoryOnly: secret });
      resSink = sink;
      let sinkError: NodeJS.ErrnoException | undefined;
      sink.on('error', (e: NodeJS.ErrnoException) => (sinkError = e));
      let ok = true;
      proxyRes.on('aborted', () => (ok = false));
      proxyRes.on('error', () => (ok = false));
      tee(proxyRes, res, sink).then(
        async (complete) => {
          if (sinkError) return fail(`cannot keep the body in ${store.dir}: ${sinkError.code ?? sinkError.message}`);
          if (!complete || !ok || !(req.complete || preread)) return fail('connection closed before the exchange completed');
          try {
            await finished(reqSink);
            const reqBody = redactBody(await reqSink.commit(), (t) => redactor.redactForm(t));
            const resBody = redactBody(await sink.commit(), (t) => (secret || looksLikeTokenResponse(url) ? redactor.redactJson(t) : t));
            const recordedUrl = placeholderUploads(redactor.redactUrl(url));
            const request = { method, url: recordedUrl, headers: redactor.redactHeaders(reqHeaders), body: reqBody };
            const ex: Exchange = {
              comments: [`${method} ${recordedUrl} -> ${status}`, `recorded by regtape from ${target.kind === 'upstream' ? upstream.origin : target.origin}`],
              request,
              response: { status, headers: uploadPlaceholders(redactor.redactHeaders(toPlaceholder(headers, liveOrigin))), body: resBody },
            };
            const identity = requestIdentity({ ...request, form: reqBody.kind === 'inline' ? reqBody.text : undefined });
            const base = fixtureFileName(method, recordedUrl, identity, 1, format);
            const seq = nextSequence(base);
            const file = path.join(out, fixtureFileName(method, recordedUrl, identity, seq, format));
            const scrubbed = redactor.scrub(serialize([ex], format), credentialsIn(reqHeaders));
            if (scrubbed.hits) log(`regtape: redacted ${scrubbed.hits} more secret(s) in ${path.basename(file)}`);
            await writeFileAtomic(file, scrubbed.text);
            written.push(file);
            opts.onRecorded?.({ ...ex, source: { file: path.relative(process.cwd(), file) || file, line: 1 } }, file);
            if (seq === 1 && opts.overwrite) await removeOlderSequence(out, base, new Set(written));
            const ms = Number(process.hrtime.bigint() - started) / 1e6;
            log(`${method} ${recordedUrl} ${status} ${sink.bytes}B ${ms.toFixed(0)}ms -> ${path.basename(file)}`);
            settle();
          } catch (e) {
            const code = (e as NodeJS.ErrnoException).code;
            log(`regtape: could not write a fixture for ${method} ${url} into ${out}: ${code ?? (e as Error).message}`);
            fail(`write error ${code ?? ''}`.trim());
          }
        },
        () => fail('stream error'),
      );
    });
  };
  const onResponse = new WeakMap<http.IncomingMessage, (proxyRes: http.IncomingMessage) => void>();
  proxy.on('proxyRes', (proxyRes, req) => onResponse.get(req)?.(proxyRes));

  /** Without --overwrite a request recorded again is appended as the next in its sequence. */
  const sessionSeen = new Map<string, number>();
  const nextSequence = (base: string): number => {
    const inSession = sessionSeen.get(base);
    const seq = inSession !== undefined ? inSession + 1 : opts.overwrite ? 1 : (sequences.get(base) ?? 0) + 1;
    sessionSeen.set(base, seq);
    return seq;
  };

  return {
    upstream: upstream.origin,
    out,
    handle,
    written: () => [...written],
    drain: async () => {
      while (inflight.size) await Promise.all([...inflight]);
    },
    close: () => {
      agents['http:'].destroy();
      agents['https:'].destroy();
      proxy.close();
    },
  };
}

export async function record(opts: RecordOptions): Promise<RecordServer> {
  const recorder = await createRecorder(opts);
  const server = http.createServer((req, res) => recorder.handle(req, res));
  const host = opts.host ?? '127.0.0.1';
  const { port, url } = await start(server, opts.port ?? 8000, host);
  return {
    url,
    port,
    host,
    upstream: recorder.upstream,
    out: recorder.out,
    written: recorder.written,
    close: once(async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      await recorder.drain();
      server.closeAllConnections();
      await closed;
      recorder.close();
      const tmp = new BodyStore(recorder.out).tmpDir;
      await fsp.rmdir(tmp).catch(() => undefined);
      await fsp.rmdir(path.dirname(tmp)).catch(() => undefined);
    }),
  };
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

/** Closing twice is closing once. */
function once(f: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => (p ??= f());
}

function redactBody(body: Body, f: (text: string) => string): Body {
  return body.kind === 'inline' ? { kind: 'inline', text: f(body.text) } : body;
}

/** A registry whose realm is on itself and was not rewritten still must not leak its tokens. */
function looksLikeTokenResponse(url: string): boolean {
  const kind = routeOf(url.split('?')[0]).kind;
  return kind === 'other' || kind === 'ping';
}

function parseUpstream(s: string): URL {
  let u: URL;
  try {
    u = new URL(/^[a-z]+:\/\//i.test(s) ? s : `https://${s}`);
  } catch {
    throw new UserError(`--upstream ${JSON.stringify(s)} is not a URL (e.g. https://registry-1.docker.io or http://127.0.0.1:5000)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UserError(`--upstream must be http:// or https://, not ${u.protocol}`);
  return u;
}

async function checkUpstream(u: URL): Promise<void> {
  const mod = u.protocol === 'https:' ? https : http;
  await new Promise<void>((resolve, reject) => {
    const req = mod.request(new URL('/v2/', u), { method: 'GET', timeout: 10_000 }, (res) => {
      res.resume();
      resolve();
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('no answer in 10 s'), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new UserError(
          /CERT|SSL|TLS/i.test(e.code ?? '')
            ? `upstream ${u.origin}: its TLS certificate is not trusted (${e.code}): for a private CA, start regtape with NODE_EXTRA_CA_CERTS=/path/to/ca.pem`
            : `upstream ${u.origin} is unreachable (${e.code ?? e.message}): check --upstream and the network`,
        ),
      ),
    );
    req.end();
  });
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
