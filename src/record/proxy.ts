/**
 * The recording proxy: a reverse proxy (http-proxy) in front of the real registry. Bodies stream
 * both ways; a copy of each is hashed and kept on the fly; the exchange is written once both sides
 * completed, atomically. Anything that did not complete is dropped.
 */
import httpProxy from 'http-proxy';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { finished } from 'node:stream/promises';
import { Exchange, HeaderList, headerValue } from '../fixture/model';
import { BodySink, BodyStore, isTextContentType } from '../fixture/store';
import { fileSequence, FixtureFormat, fixtureFileName, serialize, writeFileAtomic } from '../fixture/files';
import { answerProtocolErrors, HOP_BY_HOP, listen, rawHeaderList, UserError } from '../http/server';
import { errorBody } from '../registry/errors';
import { requestIdentity } from '../replay/match';
import { Redactor, RedactOptions } from './redact';
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

export async function record(opts: RecordOptions): Promise<RecordServer> {
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
  if (opts.checkUpstream !== false) await checkUpstream(upstream);

  const upstreamOrigins = new Set([upstream.origin]);
  const sequences = await existingSequences(out);
  const written: string[] = [];
  const inflight = new Set<Promise<void>>();
  const agent = upstream.protocol === 'https:' ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
  const proxy = httpProxy.createProxyServer({
    target: upstream.origin,
    changeOrigin: true, // virtual-hosted registries (Hub, ghcr, quay) need their own Host and SNI
    secure: true,
    selfHandleResponse: true,
    xfwd: false,
    agent,
    proxyTimeout: opts.upstreamTimeoutMs ?? 60_000,
  });

  const server = http.createServer((req, res) => {
    const started = process.hrtime.bigint();
    const liveOrigin = `http://${req.headers.host ?? `${opts.host ?? '127.0.0.1'}:${opts.port ?? 8000}`}`;
    const reqHeaders: HeaderList = rawHeaderList(req.rawHeaders).filter(([n]) => !HOP_BY_HOP.has(n) && n !== 'host');
    const url = req.url ?? '/';
    const identity = requestIdentity({ method: req.method ?? 'GET', url, headers: reqHeaders });
    const base = fixtureFileName(req.method ?? 'GET', url, identity, 1, format);
    const seq = (sequences.get(base) ?? 0) + 1;
    sequences.set(base, seq);
    const file = path.join(out, fixtureFileName(req.method ?? 'GET', url, identity, seq, format));

    const reqSink = store.sink({ inlineText: isTextContentType(headerValue(reqHeaders, 'content-type')) });
    req.on('data', (chunk: Buffer) => reqSink.write(chunk));
    req.on('end', () => reqSink.end());

    let settle!: () => void;
    const job = new Promise<void>((r) => (settle = r));
    inflight.add(job);
    void job.then(() => inflight.delete(job));
    const fail = (why: string): void => {
      void Promise.all([reqSink.discard(), resSink?.discard()]).finally(settle);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log(`${req.method} ${url} FAILED ${why} ${ms.toFixed(0)}ms (not recorded)`);
    };
    let resSink: BodySink | undefined;

    proxy.web(req, res, {}, (err: NodeJS.ErrnoException) => {
      const message = `regtape: upstream ${upstream.origin} failed: ${err.code ?? err.message}`;
      if (!res.headersSent) {
        const body = errorBody('UNAVAILABLE', message);
        res.writeHead(502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } else res.destroy();
      fail(err.code ?? err.message);
    });

    (req as http.IncomingMessage & { regtapeOnResponse?: (p: http.IncomingMessage) => void }).regtapeOnResponse = (proxyRes) => {
      const upstreamHeaders = rawHeaderList(proxyRes.rawHeaders).filter(([n]) => !HOP_BY_HOP.has(n));
      const clientHeaders = rewriteLocationHeaders(upstreamHeaders, upstreamOrigins, liveOrigin);
      const flat: string[] = [];
      for (const [n, v] of clientHeaders) flat.push(n, v);
      res.writeHead(proxyRes.statusCode ?? 502, proxyRes.statusMessage, flat);
      const sink = store.sink({ inlineText: isTextContentType(headerValue(upstreamHeaders, 'content-type')) });
      resSink = sink;
      let ok = true;
      proxyRes.on('aborted', () => (ok = false));
      proxyRes.on('error', () => (ok = false));
      tee(proxyRes, res, sink).then(
        async (complete) => {
          if (!complete || !ok || !req.complete) return fail('connection closed before the exchange completed');
          try {
            await finished(reqSink);
            const ex: Exchange = {
              comments: [`${req.method} ${url} -> ${proxyRes.statusCode}`, `recorded by regtape from ${upstream.origin}`],
              request: { method: req.method ?? 'GET', url, headers: redactor.redactHeaders(reqHeaders), body: await reqSink.commit() },
              response: {
                status: proxyRes.statusCode ?? 502,
                headers: redactor.redactHeaders(toPlaceholder(clientHeaders, liveOrigin)),
                body: await sink.commit(),
              },
            };
            await writeFileAtomic(file, serialize([ex], format));
            written.push(file);
            const ms = Number(process.hrtime.bigint() - started) / 1e6;
            log(`${req.method} ${url} ${proxyRes.statusCode} ${sink.bytes}B ${ms.toFixed(0)}ms -> ${path.basename(file)}`);
            settle();
          } catch (e) {
            process.stderr.write(`regtape: could not write fixture ${file}: ${(e as Error).message}\n`);
            fail('write error');
          }
        },
        () => fail('stream error'),
      );
    };
  });
  proxy.on('proxyRes', (proxyRes, req) => {
    (req as http.IncomingMessage & { regtapeOnResponse?: (p: http.IncomingMessage) => void }).regtapeOnResponse?.(proxyRes);
  });
  answerProtocolErrors(server);
  const host = opts.host ?? '127.0.0.1';
  await listen(server, opts.port ?? 8000, host);
  const port = (server.address() as AddressInfo).port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}`,
    port,
    host,
    upstream: upstream.origin,
    out,
    written: () => [...written],
    close: async () => {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      await Promise.all([...inflight]);
      server.closeAllConnections();
      await closed;
      agent.destroy();
      proxy.close();
    },
  };
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
      reject(new UserError(`upstream ${u.origin} is unreachable (${e.code ?? e.message}): check --upstream and the network`)),
    );
    req.end();
  });
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
