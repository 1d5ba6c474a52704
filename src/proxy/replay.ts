/**
 * `regtape replay DIR --proxy`: the forward proxy, offline. Each host folder (`DIR/ghcr.io/`) gets its
 * own Replayer; CONNECT tunnels are terminated with the CA's certificate for the host and their
 * requests answered by that host's Replayer. A host with no fixtures gets a registry error naming it.
 * Nothing here opens a connection: there is no upstream.
 *
 * Token endpoints: a recorded challenge names its realm (`https://auth.docker.io/token`); requests to a
 * realm are handed to the Replayer under regtape's token path (registry/auth.ts), recorded and live
 * alike, so that they match by service and scopes and get fresh tokens, as in reverse-proxy replay.
 */
import * as http from 'node:http';
import * as path from 'node:path';
import { LoadedExchange, loadFixtures, FixturePathError } from '../fixture/files';
import { listen } from '../http/server';
import { realmToPath } from '../registry/auth';
import { errorBody } from '../registry/errors';
import { controlApp, HealthJson, isControlPath, summaryJson } from '../control/api';
import { Redactor } from '../record/redact';
import { FaultRule } from '../replay/faults';
import { RECENT_MAX, Replayer, ReplaySummary, ServedRequest } from '../replay/replayer';
import { ReplayServer, StrictReplayError } from '../replay/server';
import { Unmatched } from '../replay/unmatched';
import { CertificateAuthority, loadOrCreateCA } from './ca';
import { forwardListener, ProxyTarget } from './connect';
import { isHostKey, Realms } from './hosts';
import { isLoopback } from './hosts';
import { guardRequest, hostMatcher } from '../http/guard';
import { UserError } from '../http/server';

export interface ForwardReplayOptions {
  /** Folders recorded with `record --proxy` (one subfolder per host). */
  fixtures: string | string[];
  port?: number;
  host?: string;
  /** Host header values the control API accepts besides loopback names (`--allow-host`). */
  allowHosts?: string[];
  /** The body store when it is outside the fixture folders (`--store`). */
  store?: string;
  ca?: CertificateAuthority;
  /** `--ca-dir`: the CA's folder (default: defaultCaDir()). */
  caDir?: string;
  log?: (line: string, level?: 'request' | 'warn') => void;
  strict?: boolean | 'unused';
  latency?: number | [number, number];
  /** Fault rules apply per host: `#2` is the second matching request to that host. */
  faults?: FaultRule[];
  /** Called with every registry request once answered (replay/server.ts ReplayOptions.onRequest); URLs carry the host. */
  onRequest?: (r: ServedRequest) => void;
}

export interface ForwardReplayServer extends ReplayServer {
  caCertPath: string;
  /** Hosts with fixtures. */
  hosts: string[];
}

/** Splits loaded exchanges by the host folder they were found in, directly under one of the roots. */
function byHost(exchanges: LoadedExchange[], roots: string[]): Map<string, LoadedExchange[]> {
  const out = new Map<string, LoadedExchange[]>();
  for (const ex of exchanges) {
    const file = path.resolve(ex.source?.file ?? '');
    const root = roots.find((r) => file.startsWith(r + path.sep));
    const rel = root ? path.relative(root, file).split(path.sep) : [];
    if (rel.length < 2 || !isHostKey(rel[0])) {
      throw new FixturePathError(
        `${ex.source?.file ?? file}: with --proxy, fixtures live in one folder per host (DIR/ghcr.io/..., as \`regtape record --proxy\` writes them); give the folder that holds the host folders`,
      );
    }
    const list = out.get(rel[0]);
    if (list) list.push(ex);
    else out.set(rel[0], [ex]);
  }
  return out;
}

export async function replayForward(opts: ForwardReplayOptions): Promise<ForwardReplayServer> {
  const paths = (Array.isArray(opts.fixtures) ? opts.fixtures : [opts.fixtures]).map((p) => path.resolve(p));
  const host = opts.host ?? '127.0.0.1';
  if (!isLoopback(host)) throw new UserError(`replay --proxy listens on loopback only, not ${host}`);
  const log = opts.log ?? ((): void => undefined);
  const loaded = await loadFixtures(paths, { store: opts.store });
  const hosts = byHost(loaded.exchanges, paths);
  if (hosts.size === 0) throw new FixturePathError(`no fixtures in ${paths.join(', ')}`);
  const ca = opts.ca ?? (await loadOrCreateCA(opts.caDir));

  const realms = new Realms();
  for (const ex of loaded.exchanges) if (ex.response) realms.learn(ex.response.headers);
  // Only a matching key, the same for recorded and live requests: the scheme does not take part.
  const tokenUrl = (key: string, url: string): string | undefined => {
    if (!realms.isToken(key, url)) return undefined;
    const q = url.indexOf('?');
    return realmToPath(`https://${key}${q < 0 ? url : url.slice(0, q)}`)! + (q < 0 ? '' : url.slice(q));
  };
  // What a live URL is matched as: signed query parameters as the recorder wrote them (redacted).
  const redactor = new Redactor();

  /** Per host: its replayer; exchanges handed to it under another URL, by their original. */
  const replayers = new Map<string, Replayer>();
  const originals = new WeakMap<LoadedExchange, LoadedExchange>();
  for (const [key, list] of hosts) {
    const mapped = list.map((ex) => {
      const u = tokenUrl(key, ex.request.url);
      if (!u) return ex;
      const copy = { ...ex, request: { ...ex.request, url: u } };
      originals.set(copy, ex);
      return copy;
    });
    const onRequest = opts.onRequest;
    replayers.set(
      key,
      await Replayer.create(mapped, {
        log: (line, level) => log(`[${key}] ${line}`, level),
        latency: opts.latency,
        faults: opts.faults,
        onRequest: onRequest && ((r) => onRequest({ ...r, url: key + r.url })),
      }),
    );
  }
  const unknownHosts = new Unmatched();
  const recentUnknown: ServedRequest[] = [];
  const known = [...hosts.keys()].sort();

  const prefixed = (key: string, request: string): string => request.replace(/^(\S+) /, `$1 ${key}`);
  const summary = (): ReplaySummary => {
    const s: ReplaySummary = { served: 0, unmatched: [], unmatchedTotal: unknownHosts.total(), unused: [], recorded: [] };
    s.unmatched.push(...unknownHosts.list());
    for (const [key, r] of replayers) {
      s.served += r.served();
      s.unmatchedTotal += r.unmatchedTotal();
      for (const m of r.unmatchedRequests()) s.unmatched.push({ ...m, request: prefixed(key, m.request) });
      for (const u of r.unused()) {
        const orig = originals.get(u) ?? u;
        s.unused.push({ ...orig, request: { ...orig.request, url: key + orig.request.url } });
      }
    }
    return s;
  };
  const requests = (): ServedRequest[] => {
    const all = [...recentUnknown];
    for (const [key, r] of replayers) for (const q of r.recent()) all.push({ ...q, url: key + q.url });
    return all.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0)).slice(-RECENT_MAX);
  };
  const reset = (): void => {
    for (const r of replayers.values()) r.reset();
    unknownHosts.clear();
    recentUnknown.length = 0;
  };
  let control: http.RequestListener | undefined;
  let closing: Promise<void> | undefined;
  const exchanges = [...replayers.values()].reduce((n, r) => n + r.size, 0);
  const health = (): HealthJson => ({ status: closing ? 'closing' : 'serving', exchanges });

  const noFixtures = (t: ProxyTarget, req: http.IncomingMessage, res: http.ServerResponse): void => {
    req.resume();
    const request = `${req.method} ${t.key}${req.url}`;
    unknownHosts.add(request, () => ({ request, nearest: [] }));
    const message = `regtape: no fixtures for host ${t.key} (the fixtures hold ${known.join(', ')}); record it with regtape record --proxy`;
    const body = errorBody('NAME_UNKNOWN', message, { regtape: 'unmatched' });
    res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0', 'x-regtape': 'unmatched' });
    res.end(req.method === 'HEAD' ? undefined : body);
    const entry: ServedRequest = { time: new Date().toISOString(), method: req.method ?? 'GET', url: t.key + (req.url ?? '/'), status: 404, bytes: 0, ms: 0, answer: message, outcome: 'unmatched' };
    if (opts.onRequest) opts.onRequest(entry);
    else log(`${request} 404 UNMATCHED <- ${message}`, 'warn');
    if (recentUnknown.length >= RECENT_MAX) recentUnknown.shift();
    recentUnknown.push(entry);
  };

  const allowed = hostMatcher(opts.allowHosts ?? []);
  const listener = forwardListener({
    ca,
    log,
    // Replay reaches no host at all: every CONNECT is answered here.
    refuse: () => undefined,
    dispatch: (t, req, res) => {
      const r = replayers.get(t.key);
      if (!r) return noFixtures(t, req, res);
      const url = redactor.redactUrl(req.url ?? '/');
      req.url = tokenUrl(t.key, url) ?? url;
      r.handle(req, res);
    },
    local: (req, res) => {
      if (guardRequest(req, res, allowed)) return; // DNS rebinding (http/guard.ts)
      if (isControlPath(req.url ?? '/')) {
        control ??= controlApp({ health, summary, requests, requestsMax: RECENT_MAX, reset });
        return control(req, res);
      }
      req.resume();
      res.writeHead(400, { 'content-type': 'text/plain' }).end('regtape replay --proxy is a forward proxy: set HTTPS_PROXY=http://' + (req.headers.host ?? '127.0.0.1:8000') + ' in the client; the control API is under /__regtape/\n');
    },
  });
  const server = listener.server;
  await listen(server, opts.port ?? 8000, host);
  const port = (server.address() as { port: number }).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  return {
    url,
    port,
    host,
    caCertPath: ca.certPath,
    hosts: known,
    exchanges,
    files: loaded.files,
    unservable: [...replayers.values()].flatMap((r) => r.unservable),
    unmatched: () => summary().unmatched,
    unused: () => summary().unused,
    served: () => summary().served,
    recorded: () => [],
    requests,
    summary,
    report: () => summaryJson(summary()),
    reset,
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        listener.closeAll();
        await Promise.all([...replayers.values()].map((r) => r.close()));
        server.closeAllConnections();
        await closed;
        const s = summary();
        if ((opts.strict && s.unmatched.length) || (opts.strict === 'unused' && s.unused.length)) throw new StrictReplayError(s);
      })()),
  };
}
