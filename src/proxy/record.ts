/**
 * `regtape record --proxy`: a forward proxy that records every host the client reaches through it
 * (registry, token realm, CDN), each into its own folder `DIR/<host>/`, with one body store for all
 * (`DIR/bodies/`). One recorder per host (record/proxy.ts) with rewriting off: what the host said is
 * what is written, redacted.
 */
import * as path from 'node:path';
import { promises as fsp } from 'node:fs';
import { BODIES_DIR, BodyStore } from '../fixture/store';
import { FixtureFormat } from '../fixture/files';
import { listen, UserError } from '../http/server';
import { errorBody } from '../registry/errors';
import { routeOf } from '../registry/routes';
import { createRecorder, Recorder, RecordServer } from '../record/proxy';
import { RedactOptions } from '../record/redact';
import { upstreamAgents } from '../record/upstream';
import { Progress } from '../record/progress';
import { guardRequest, hostMatcher } from '../http/guard';
import { isLoopback } from './hosts';
import { CertificateAuthority, loadOrCreateCA } from './ca';
import { forwardListener, ProxyTarget } from './connect';
import { Realms } from './hosts';

export interface ForwardRecordOptions {
  out?: string;
  port?: number;
  host?: string;
  format?: FixtureFormat;
  redact?: RedactOptions;
  overwrite?: boolean;
  /** Write per-run values raw (`--keep-noise`, record/noise.ts). */
  keepNoise?: boolean;
  /** Mark bodies for Git LFS (`--lfs`). */
  lfs?: boolean;
  /** Keep bodies here (layout `sha256/<hex>`) instead of `<out>/bodies/` (`--store`). */
  store?: string;
  /** The CA that issues the certificates for intercepted hosts (default: loadOrCreateCA(caDir)). */
  ca?: CertificateAuthority;
  /** `--ca-dir`: the CA's folder (default: defaultCaDir()). */
  caDir?: string;
  /** Hosts the recorder may reach (default: any, when listening on loopback). */
  allowHosts?: string[];
  /** `--resolve HOST=ADDR:PORT` values, for every host reached (record/upstream.ts upstreamAgents). */
  resolve?: string[];
  /** `--upstream-ca FILE`: CA certificates trusted for every host reached, besides the system's. */
  upstreamCa?: string;
  upstreamTimeoutMs?: number;
  /** Progress of transfers, shared by every host's recorder (record/progress.ts). */
  progress?: Progress;
  log?: (line: string, level?: 'request' | 'warn') => void;
}

export interface ForwardRecordServer extends RecordServer {
  /** The CA certificate clients must trust. */
  caCertPath: string;
  /** Host folders recorded into so far. */
  hosts(): string[];
}

export async function recordForward(opts: ForwardRecordOptions): Promise<ForwardRecordServer> {
  const out = path.resolve(opts.out ?? 'fixtures');
  const host = opts.host ?? '127.0.0.1';
  const patterns = opts.allowHosts ?? [];
  const allowed = hostMatcher(patterns);
  if (!isLoopback(host) && patterns.length === 0) {
    throw new UserError(`the proxy would let anyone who reaches ${host} use this machine to reach any host: listen on 127.0.0.1, or name the hosts it may reach with --allow-host`);
  }
  const log = opts.log ?? ((): void => undefined);
  // A bad --resolve or --upstream-ca is said now, not at the first request.
  upstreamAgents({ resolve: opts.resolve, ca: opts.upstreamCa }).destroy();
  const ca = opts.ca ?? (await loadOrCreateCA(opts.caDir));
  await fsp.mkdir(out, { recursive: true }).catch((e: NodeJS.ErrnoException) => {
    throw new UserError(`cannot create the fixtures folder ${out}: ${e.code ?? e.message}`);
  });
  const storeDir = opts.store ? path.resolve(opts.store) : path.join(out, BODIES_DIR);
  const realms = new Realms();
  const progress = opts.progress ?? new Progress();
  const recorders = new Map<string, Promise<Recorder>>();
  /** Recorders that are up, for a synchronous written(). */
  const ready: Recorder[] = [];

  const recorderFor = (t: ProxyTarget): Promise<Recorder> => {
    // One folder per host: http and https on the same host:port share it (a registry is one or the other).
    let r = recorders.get(t.key);
    if (!r) {
      r = createRecorder({
        upstream: t.origin,
        out: path.join(out, t.key),
        store: storeDir,
        format: opts.format,
        redact: opts.redact,
        overwrite: opts.overwrite,
        keepNoise: opts.keepNoise,
        lfs: opts.lfs,
        rewrite: false,
        checkUpstream: false,
        resolve: opts.resolve,
        upstreamCa: opts.upstreamCa,
        progress,
        upstreamTimeoutMs: opts.upstreamTimeoutMs,
        // Fails closed: a realm, or anything outside the registry API that no redirect pointed to.
        isTokenRequest: (url) => realms.isToken(t.key, url) || (routeOf(url.split('?')[0]).kind === 'other' && !realms.isRedirectTarget(t.key, url)),
        onResponseHeaders: (status, headers) => {
          realms.learn(headers);
          realms.learnRedirect(status, headers, t.origin);
        },
        log: (line) => log(`[${t.key}] ${line}`),
      });
      recorders.set(t.key, r);
      // A host whose folder cannot be made is retried on its next request.
      r.then((rec) => void ready.push(rec), () => recorders.delete(t.key));
    }
    return r;
  };

  const listener = forwardListener({
    ca,
    log,
    refuse: (h, p) =>
      patterns.length === 0 || allowed(`${h.includes(':') ? `[${h}]` : h}:${p}`) ? undefined : `${h}:${p} is not among the hosts this recorder may reach (--allow-host ${patterns.join(' ')})`,
    dispatch: (t, req, res) => {
      recorderFor(t).then(
        (rec) => {
          if (t.scheme !== new URL(rec.upstream).protocol.slice(0, -1)) {
            req.resume();
            const body = errorBody('UNSUPPORTED', `regtape: ${t.key} was reached over ${new URL(rec.upstream).protocol.slice(0, -1)} before; this recorder records one scheme per host`);
            res.writeHead(502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
            return;
          }
          rec.handle(req, res);
        },
        (e: Error) => {
          req.resume();
          const body = errorBody('UNAVAILABLE', `regtape: cannot record ${t.key}: ${e.message}`);
          log(`regtape: cannot record ${t.key}: ${e.message}`, 'warn');
          res.writeHead(502, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
        },
      );
    },
    local: (req, res) => {
      if (guardRequest(req, res, allowed)) return; // DNS rebinding (http/guard.ts)
      req.resume();
      // As the reverse recorder: the container image's health check (and any supervisor) asks here.
      if (req.url === '/__regtape/health' && (req.method === 'GET' || req.method === 'HEAD')) {
        const body = JSON.stringify({ status: 'recording', upstream: 'forward proxy', hosts: [...recorders.keys()].sort() });
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
        return;
      }
      res.writeHead(400, { 'content-type': 'text/plain' }).end('regtape record --proxy is a forward proxy: set HTTPS_PROXY=http://' + (req.headers.host ?? '127.0.0.1:8000') + ' in the client, and keep the image names as they are\n');
    },
  });
  const server = listener.server;
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 125_000;
  await listen(server, opts.port ?? 8000, host);
  const port = (server.address() as { port: number }).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  const all = async (): Promise<Recorder[]> => (await Promise.allSettled([...recorders.values()])).flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    host,
    upstream: 'every host the client reaches (forward proxy)',
    out,
    caCertPath: ca.certPath,
    hosts: () => [...recorders.keys()].sort(),
    progress,
    inflightCount: () => ready.reduce((n, r) => n + r.inflightCount(), 0),
    written: () => ready.flatMap((r) => r.written()),
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeIdleConnections();
        const recs = await all();
        await Promise.all(recs.map((r) => r.drain()));
        listener.closeAll();
        server.closeAllConnections();
        await closed;
        for (const r of recs) r.close();
        const tmp = BodyStore.at(storeDir).tmpDir;
        await fsp.rmdir(tmp).catch(() => undefined);
        await fsp.rmdir(path.dirname(tmp)).catch(() => undefined);
        // Folders of hosts that answered nothing recordable hold nothing: not left behind.
        for (const r of recs) await fsp.rmdir(r.out).catch(() => undefined);
      })()),
  };
}
