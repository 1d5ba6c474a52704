/**
 * The recording proxy: a reverse proxy (http-proxy-3, the maintained http-proxy) in front of the real registry. Bodies stream
 * both ways; a copy of each is hashed and kept on the fly; the exchange is written once both sides
 * completed, atomically (writer.ts). Anything that did not complete is dropped. Where each request
 * goes, and how answers keep the client on the proxy: targets.ts.
 */
import type * as HttpProxy3 from 'http-proxy-3';
import * as http from 'node:http';
import type * as net from 'node:net';
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { finished } from 'node:stream/promises';
import { PassThrough, Readable } from 'node:stream';
import { Exchange, HeaderList, headerValue, ORIGIN_PLACEHOLDER } from '../fixture/model';
import { replaceOwnOriginInHeaders, replaceOwnOriginInUrl } from '../fixture/identity';
import { BODIES_DIR, BodyStore, isTextContentType } from '../fixture/store';
import { writeGitAttributes } from '../fixture/gitattributes';
import { FixtureFormat, removeStaleTempFiles } from '../fixture/files';
import { HOP_BY_HOP, rawHeaderList, start, UserError } from '../http/server';
import { createServer, requestOrigin } from '../http/tls';
import { guardRequest, hostMatcher, refuse, refuseForwardProxyRequest } from '../http/guard';
import { serverTls, ServeTlsOptions } from '../proxy/ca';
import { errorBody } from '../registry/errors';
import { Redactor, RedactOptions } from './redact';
import { Target, Targets } from './targets';
import { checkUpstream, DEFAULT_UPSTREAM, parseUpstream, upstreamAgents } from './upstream';
import { FixtureWriter, isTokenLikeUrl } from './writer';
import { lockFolder } from './lock';
import { tee } from './tee';
import { Progress, Transfer } from './progress';
import { BlobStreams } from './blob-stream';

export { DEFAULT_UPSTREAM } from './upstream';

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
  /**
   * Keep bodies in this folder instead of `<out>/bodies/` (`--store DIR`): a store outside the fixture
   * folder, shared by several fixture sets. Same layout: `<store>/sha256/<hex>`.
   */
  store?: string;
  /**
   * Write per-run values as they were: `Date`, token times, the order of Accept lines, the kernel in
   * the docker daemon's User-Agent, ports of local token servers and CDNs. Default: normalised
   * (record/noise.ts), so that recording the same pulls again gives the same files.
   */
  keepNoise?: boolean;
  /**
   * The `.gitattributes` written beside the body store marks bodies for Git LFS
   * (`filter=lfs diff=lfs merge=lfs -text`) instead of `binary -diff`.
   */
  lfs?: boolean;
  /** Serve HTTPS (`--tls`): a certificate from regtape's CA, or the user's (`--tls-cert/--tls-key`). */
  tls?: ServeTlsOptions;
  /** `--resolve HOST=ADDR:PORT` values: where connections for HOST go (TLS still verified for HOST). */
  resolve?: string[];
  /** `--upstream-ca FILE`: CA certificates (PEM) trusted for upstreams besides the system's. */
  upstreamCa?: string;
  /**
   * Hosts the recorder may forward token and redirect requests to besides the upstream and the realms
   * and redirect targets the upstream named (`--allow-host`, `*` wildcards); also Host header values
   * to accept besides loopback names and the address connected to.
   */
  allowHosts?: string[];
  /** Progress of transfers and the totals (record/progress.ts); the CLI passes one that prints. */
  progress?: Progress;
  /**
  /**
   * false: record what the host really said, untouched (the forward proxy, src/proxy/: the client
   * reaches the realm and the CDN through regtape anyway): no realm, Location or origin rewriting.
   */
  rewrite?: boolean;
  /**
   * Which requests are token requests, when the caller knows better than the URL (the forward proxy:
   * a realm named in a challenge, and not a redirect target it saw named): their bodies may hold secrets.
   */
  isTokenRequest?: (url: string) => boolean;
  /** Sees each upstream response's status and headers before the client does. */
  onResponseHeaders?: (status: number, headers: HeaderList) => void;
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
  /** With --tls from regtape's CA: the CA certificate clients must trust. */
  caCert?: string;
  /** Fixture files written so far. */
  written(): string[];
  /** Transfers in flight and the totals so far. */
  progress: Progress;
  /** Exchanges in flight (waiting for an answer or streaming it). */
  inflightCount(): number;
  /** Stops accepting, lets in-flight exchanges finish and be written, then resolves. */
  close(): Promise<void>;
}

/** The recording proxy as a request handler, without a server of its own (replay --record-missing uses it). */
export interface Recorder {
  upstream: string;
  out: string;
  /** Transfers in flight and totals. */
  progress: Progress;
  /** Exchanges in flight (waiting for an answer or streaming it). */
  inflightCount(): number;
  /** Where bodies are kept: `<out>/bodies` or the `store` option. */
  store: BodyStore;
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
  // Bad --resolve or --upstream-ca values fail here, before the folder is locked.
  const upstreamAgentSet = upstreamAgents({ resolve: opts.resolve, ca: opts.upstreamCa });
  // One recorder per folder: a second one would number the same sequences and overwrite files.
  const lock = await lockFolder(out);
  let writer: FixtureWriter;
  const store = opts.store ? BodyStore.at(opts.store) : new BodyStore(out);
  let challenge: string | undefined;
  try {
    await fsp.mkdir(store.dir, { recursive: true }).catch((e: NodeJS.ErrnoException) => {
      throw new UserError(`cannot create the body store ${store.dir}: ${e.code ?? e.message}`);
    });
    await store.cleanTemp();
    await removeStaleTempFiles(out);
    if (opts.store) await writeGitAttributes(store.dir, 'sha256/**', opts.lfs ?? false);
    else await writeGitAttributes(out, `${BODIES_DIR}/**`, opts.lfs ?? false);
    challenge = opts.checkUpstream !== false ? await checkUpstream(upstream, upstreamAgentSet) : undefined;
    writer = await FixtureWriter.open({ out, format, redactor, overwrite: opts.overwrite, keepNoise: opts.keepNoise, log });
  } catch (e) {
    upstreamAgentSet.destroy();
    lock.release();
    throw e;
  }

  const targets = new Targets(upstream, hostMatcher(opts.allowHosts ?? []));
  targets.learnChallenge(challenge);
  const inflight = new Set<Promise<void>>();
  const progress = opts.progress ?? new Progress();
  const agents = { 'http:': upstreamAgentSet.http, 'https:': upstreamAgentSet.https };
  // Loaded when a recorder is made: a replay without --record-missing never loads it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { createProxyServer } = require('http-proxy-3') as typeof HttpProxy3;
  const rewrite = opts.rewrite !== false;
  const proxy = createProxyServer({
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

  const handle = (req: http.IncomingMessage, res: http.ServerResponse, preread?: Buffer): void => {
    try {
      forward(req, res, preread);
    } catch (e) {
      // A bug must cost one request, never the recorder.
      log(`regtape: internal error on ${req.method} ${redactor.redactUrl(req.url ?? '/')}: ${(e as Error).stack ?? e}`);
      if (!res.headersSent) {
        const body = errorBody('UNKNOWN', `regtape: internal error: ${(e as Error).message}`);
        res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else res.destroy();
    }
  };

  const blobs = new BlobStreams(store);
  const forward = (req: http.IncomingMessage, res: http.ServerResponse, preread?: Buffer, regular = false): void => {
    if (refuseForwardProxyRequest(req, res)) return; // never written: its URL is no registry path
    const started = process.hrtime.bigint();
    // The forward proxy (no rewriting) has no origin of its own in what it records.
    const liveOrigin = !rewrite ? '' : requestOrigin(req, `${opts.host ?? '127.0.0.1'}:${opts.port ?? 8000}`);
    // The proxy's own origin in the request (a mount's `origin=`, Origin, Referer) is written as the
    // placeholder (replay matches it so, on any port) and sent upstream as the upstream's own.
    const rawHeaders: HeaderList = rawHeaderList(req.rawHeaders).filter(([n]) => !HOP_BY_HOP.has(n) && n !== 'host');
    const reqHeaders: HeaderList = rewrite ? replaceOwnOriginInHeaders(rawHeaders, liveOrigin, ORIGIN_PLACEHOLDER) : rawHeaders;
    const method = req.method ?? 'GET';
    const sent = req.url ?? '/';
    const url = replaceOwnOriginInUrl(sent, liveOrigin, ORIGIN_PLACEHOLDER);
    for (const h of ['origin', 'referer'] as const) {
      const v = req.headers[h];
      if (typeof v === 'string') req.headers[h] = replaceOwnOriginInHeaders([[h, v]], liveOrigin, upstream.origin)[0][1];
    }
    // Log lines are as clean as fixtures: no query token or URL signature.
    const shown = redactor.redactUrl(url);
    const target: Target | undefined = rewrite ? targets.of(sent) : { origin: upstream.origin, path: sent, kind: 'upstream' };
    if (!target) {
      const body = errorBody('NAME_UNKNOWN', `regtape: ${url} is not a valid regtape token or redirect URL`);
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    if (!targets.permits(target)) {
      // Not an open proxy: only the upstream, and the realms and redirect targets it named to us.
      const host = new URL(target.origin).host;
      refuse(res, 403, 'DENIED', `regtape: will not forward to ${host}: it is neither the upstream nor a token realm or redirect target the upstream named; to allow it, start regtape with --allow-host ${host}`);
      req.resume();
      log(`${method} ${shown} REFUSED: ${host} is not the upstream nor named by it (--allow-host)`);
      return;
    }
    // The forward proxy records answers untouched: not through the blob fast path, which rewrites them.
    if (rewrite && !regular && !preread && blobs.takes(req, target) && !isTokenLikeUrl(url)) {
      // Blob GETs by digest: streamed on a plain socket, hashed and written off the main thread (blob-stream.ts).
      const job = blobs.forward(res, {
        target,
        headers: reqHeaders,
        timeoutMs,
        connect: (host, port) => (agents['http:'] as unknown as { createConnection(o: net.NetConnectOpts): net.Socket }).createConnection({ host, port }),
        clientHeaders: (status, headers) => targets.clientHeaders(status, headers, target, liveOrigin),
        fallback: () => forward(req, res, undefined, true),
        record: async (ex) => {
          try {
            const { exchange, file } = await writer.write({ method, url, reqHeaders, reqBody: { kind: 'none' }, status: ex.status, resHeaders: ex.headers, resBody: ex.body, liveOrigin, secret: false, from: upstream.origin });
            opts.onRecorded?.({ ...exchange, source: { file: path.relative(process.cwd(), file) || file, line: 1 } }, file);
            const size = ex.body.kind === 'stored' ? ex.body.size : ex.body.kind === 'inline' ? Buffer.byteLength(ex.body.text) : 0;
            log(`${method} ${exchange.request.url} ${ex.status} ${size}B ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(0)}ms -> ${path.basename(file)}`);
          } catch (e) {
            const code = (e as NodeJS.ErrnoException).code;
            log(`regtape: could not write a fixture for ${method} ${shown} into ${out}: ${code ?? (e as Error).message}`);
          }
        },
        progress: (length) => progress.start(`${method} ${url}`, length > 0 ? length : undefined),
        fail: (why) => log(`${method} ${shown} FAILED ${why} ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(0)}ms (not recorded)`),
      });
      inflight.add(job);
      void job.then(() => inflight.delete(job));
      return;
    }
    // The caller's decision, when it knows (the forward proxy), replaces the URL heuristic.
    const decided = opts.isTokenRequest !== undefined;
    const secret = target.kind === 'token' || (target.kind === 'upstream' && (decided ? opts.isTokenRequest!(url) : isTokenLikeUrl(url)));
    const reqSink = store.sink({ inlineText: secret || isTextContentType(headerValue(reqHeaders, 'content-type')), memoryOnly: secret });
    reqSink.on('error', (e) => log(`regtape: cannot keep the request body of ${method} ${shown}: ${e.message}`));
    // The request body goes upstream and into the sink with backpressure from both: a 1 GiB upload
    // is never held in memory (http-proxy pipes `buffer` upstream instead of the request itself).
    let upstreamBody: Readable;
    if (preread) {
      reqSink.end(preread);
      upstreamBody = Readable.from([preread]);
    } else {
      const through = new PassThrough({ highWaterMark: 1024 * 1024 });
      void tee(req, through, reqSink);
      upstreamBody = through;
    }

    let settle!: () => void;
    const job = new Promise<void>((r) => (settle = r));
    inflight.add(job);
    void job.then(() => inflight.delete(job));
    let resSink: ReturnType<BodyStore['sink']> | undefined;
    let transfer: Transfer | undefined;
    let failed = false;
    const fail = (why: string): void => {
      if (failed) return;
      failed = true;
      transfer?.end(false);
      void Promise.all([reqSink.discard(), resSink?.discard()]).finally(settle);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log(`${method} ${shown} FAILED ${why} ${ms.toFixed(0)}ms (not recorded)`);
    };

    if (target.kind === 'redirect') {
      // CDNs and object stores reject a second auth mechanism (S3: "Only one auth mechanism allowed").
      delete req.headers.authorization;
      delete req.headers.cookie;
    }
    req.url = replaceOwnOriginInUrl(target.path, liveOrigin, upstream.origin);
    const agent = target.origin.startsWith('https:') ? agents['https:'] : agents['http:'];
    proxy.web(req, res, { target: target.origin, agent, buffer: upstreamBody }, (err: NodeJS.ErrnoException) => {
      upstreamBody.resume(); // the rest of the request body is read and dropped, so the connection stays usable
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
      opts.onResponseHeaders?.(status, upstreamHeaders);
      const headers = rewrite ? targets.clientHeaders(status, upstreamHeaders, target, liveOrigin) : upstreamHeaders;
      const flat: string[] = [];
      for (const [n, v] of headers) flat.push(n, v);
      res.writeHead(status, proxyRes.statusMessage, flat);
      const sink = store.sink({ inlineText: secret || isTextContentType(headerValue(upstreamHeaders, 'content-type')), memoryOnly: secret });
      resSink = sink;
      const length = Number(headerValue(upstreamHeaders, 'content-length'));
      const t = progress.start(`${method} ${shown}`, Number.isSafeInteger(length) && length > 0 ? length : undefined);
      transfer = t;
      proxyRes.on('data', (c: Buffer) => t.add(c.length));
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
            const resBody = await sink.commit();
            const { exchange, file, times } = await writer.write({
              method,
              url,
              reqHeaders,
              reqBody: await reqSink.commit(),
              status,
              resHeaders: headers,
              resBody,
              liveOrigin,
              secret,
              decided,
              from: target.kind === 'upstream' ? upstream.origin : target.origin,
            });
            opts.onRecorded?.({ ...exchange, source: { file: path.relative(process.cwd(), file) || file, line: 1 } }, file);
            const recordedUrl = exchange.request.url;
            const ms = Number(process.hrtime.bigint() - started) / 1e6;
            t.end(true, resBody.kind === 'stored' ? resBody.digest : undefined);
            log(`${method} ${recordedUrl} ${status} ${sink.bytes}B ${ms.toFixed(0)}ms -> ${path.basename(file)}${times > 1 ? ` x${times}` : ''}`);
            settle();
          } catch (e) {
            const code = (e as NodeJS.ErrnoException).code;
            log(`regtape: could not write a fixture for ${method} ${shown} into ${out}: ${code ?? (e as Error).message}`);
            fail(`write error ${code ?? ''}`.trim());
          }
        },
        () => fail('stream error'),
      );
    });
  };
  const onResponse = new WeakMap<http.IncomingMessage, (proxyRes: http.IncomingMessage) => void>();
  proxy.on('proxyRes', (proxyRes, req) => onResponse.get(req)?.(proxyRes));

  return {
    upstream: upstream.origin,
    out,
    store,
    progress,
    inflightCount: () => inflight.size,
    handle,
    written: () => writer.files(),
    drain: async () => {
      while (inflight.size) await Promise.all([...inflight]);
    },
    close: () => {
      lock.release();
      progress.stop();
      blobs.close();
      agents['http:'].destroy();
      agents['https:'].destroy();
      proxy.close();
    },
  };
}

export async function record(opts: RecordOptions): Promise<RecordServer> {
  const host = opts.host ?? '127.0.0.1';
  const tls = opts.tls ? await serverTls(opts.tls, host) : undefined;
  const recorder = await createRecorder(opts);
  const allowed = hostMatcher([...(opts.allowHosts ?? []), ...(tls?.names ?? [])]);
  const server = createServer(
    (req, res) => {
      if (guardRequest(req, res, allowed)) return; // DNS rebinding, absolute-form (http/guard.ts)
      // The container image's health check (and any supervisor) asks here; never forwarded, never recorded.
      if (req.url === '/__regtape/health' && (req.method === 'GET' || req.method === 'HEAD')) {
        const body = JSON.stringify({ status: 'recording', upstream: recorder.upstream });
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      recorder.handle(req, res);
    },
    tls,
    opts.log,
  );
  const { port, url } = await start(server, opts.port ?? 8000, host).catch((e: Error) => {
    recorder.close();
    throw e;
  });
  return {
    url,
    port,
    host,
    upstream: recorder.upstream,
    out: recorder.out,
    caCert: tls?.caCertPath,
    written: recorder.written,
    progress: recorder.progress,
    inflightCount: recorder.inflightCount,
    close: once(async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      await recorder.drain();
      server.closeAllConnections();
      await closed;
      recorder.close();
      const tmp = recorder.store.tmpDir;
      await fsp.rmdir(tmp).catch(() => undefined);
      await fsp.rmdir(path.dirname(tmp)).catch(() => undefined);
    }),
  };
}

/** Closing twice is closing once. */
function once(f: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => (p ??= f());
}

