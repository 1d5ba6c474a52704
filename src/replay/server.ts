/**
 * The replay server: registry traffic on plain node:http (the data plane, replayer.ts), the control
 * API under /__regtape/ on express (control/api.ts). One listening port for both.
 */
import * as http from 'node:http';
import { LoadedExchange, loadFixtures } from '../fixture/files';
import { FixtureFormat } from '../fixture/files';
import { start, REPLAY_IDLE_TIMEOUT_MS, ServerLimits } from '../http/server';
import { createServer } from '../http/tls';
import { guardRequest, hostMatcher } from '../http/guard';
import { serverTls, ServeTlsOptions } from '../proxy/ca';
import { RedactOptions } from '../record/redact';
import { controlApp, isControlPath, summaryJson, SummaryJson } from '../control/api';
import { FaultRule } from './faults';
import { RECENT_MAX, Replayer, ReplaySummary, ServedRequest } from './replayer';

export type { ReplaySummary } from './replayer';
import { UnmatchedRequest } from './unmatched';

export interface ReplayOptions {
  /** Fixture folders and files. */
  fixtures: string | string[];
  port?: number;
  host?: string;
  /** One line per request on this function (default: none); `level` 'warn' for misses, refusals and errors. */
  log?: (line: string, level?: 'request' | 'warn') => void;
  /** No `log` line per request served (misses, refusals and errors are still logged): saves building lines nobody reads. */
  quiet?: boolean;
  /**
   * true: close() rejects when a request went unmatched; 'unused': also when a fixture was never used.
   * The CLI turns this into a non-zero exit.
   */
  strict?: boolean | 'unused';
  /** Serve what is recorded; forward what is not to this upstream and record it (VCR's new_episodes). */
  recordMissing?: { upstream: string; out?: string; format?: FixtureFormat; redact?: RedactOptions; resolve?: string[]; upstreamCa?: string };
  /**
   * Host header values to accept besides loopback names and the address connected to (`--allow-host`,
   * `*` wildcards); with --record-missing also hosts it may forward to besides what the upstream named.
   */
  allowHosts?: string[];
  /** Serve HTTPS (`--tls`): a certificate from regtape's CA, or the user's (`--tls-cert/--tls-key`). */
  tls?: ServeTlsOptions;
  /** Timeouts and the connection cap (http/server.ts DEFAULT_LIMITS; replay closes connections idle 130 s). */
  limits?: ServerLimits;
  /** Delay every answer: fixed milliseconds, or a [min, max] range drawn uniformly. */
  latency?: number | [number, number];
  /** Registry faults to inject (replay/faults.ts). */
  faults?: FaultRule[];
  /**
   * The body store when it is outside the fixture folders (`--store DIR`, as recorded with the same
   * option): every fixture's bodies are read from there, and --record-missing writes there.
   */
  store?: string;
  /** Called once per registry request answered, with what /__regtape/requests lists; replaces its `log` line. */
  onRequest?: (r: ServedRequest) => void;
}

/** close() of a strict replay server that saw unmatched requests (or unused fixtures). */
export class StrictReplayError extends Error {
  constructor(readonly summary: ReplaySummary) {
    super(
      [
        `regtape strict mode: ${summary.unmatched.length} unmatched request(s), ${summary.unused.length} unused fixture(s)`,
        ...summary.unmatched.map((m) => `  unmatched ${m.request}${m.count > 1 ? ` (x${m.count})` : ''}${m.nearest[0] ? ` (nearest: ${m.nearest[0].request}: ${m.nearest[0].why})` : ''}`),
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
  /** With --tls from regtape's CA: the CA certificate clients must trust. */
  caCert?: string;
  /** How many exchanges it can serve. */
  exchanges: number;
  /** Fixture files loaded. */
  files: string[];
  /** Requests captured without an answer (the seed's `auth` section): loaded, not servable. */
  unservable: LoadedExchange[];
  unmatched(): UnmatchedRequest[];
  unused(): LoadedExchange[];
  served(): number;
  /** Fixture files written by --record-missing. */
  recorded(): string[];
  /** The newest requests (at most RECENT_MAX), oldest first. */
  requests(): ServedRequest[];
  summary(): ReplaySummary;
  /** The summary as JSON, exactly what GET /__regtape/summary answers and `--report` writes. */
  report(): SummaryJson;
  /** A fresh run without a restart: counters, sequence positions, push and delete state. */
  reset(): void;
  /** Stops; with `strict`, rejects with StrictReplayError when the run broke the rule. */
  close(): Promise<void>;
}

export async function replay(opts: ReplayOptions): Promise<ReplayServer> {
  const paths = Array.isArray(opts.fixtures) ? opts.fixtures : [opts.fixtures];
  const tls = opts.tls ? await serverTls(opts.tls, opts.host ?? '127.0.0.1') : undefined;
  const loaded = await loadFixtures(paths, { store: opts.store });
  const firstDir = paths.find((p) => !/\.(md|markdown|txt|ya?ml)$/i.test(p)) ?? paths[0];
  const replayer = await Replayer.create(loaded.exchanges, {
    log: opts.log,
    quiet: opts.quiet,
    latency: opts.latency,
    faults: opts.faults,
    onRequest: opts.onRequest,
    recordMissing: opts.recordMissing ? { allowHosts: opts.allowHosts, ...opts.recordMissing, out: opts.recordMissing.out ?? firstDir, store: opts.store } : undefined,
  });
  const summary = (): ReplaySummary => ({
    served: replayer.served(),
    unmatched: replayer.unmatchedRequests(),
    unmatchedTotal: replayer.unmatchedTotal(),
    unused: replayer.unused(),
    recorded: replayer.recorded(),
  });
  let control: http.RequestListener | undefined;
  let closing: Promise<void> | undefined;
  const health = () => ({ status: closing ? ('closing' as const) : ('serving' as const), exchanges: replayer.size });
  const allowed = hostMatcher([...(opts.allowHosts ?? []), ...(tls?.names ?? [])]);
  const server = createServer((req, res) => {
    if (guardRequest(req, res, allowed)) return; // DNS rebinding, absolute-form (http/guard.ts)
    if (isControlPath(req.url ?? '/')) {
      control ??= controlApp({ health, summary, requests: () => replayer.recent(), requestsMax: RECENT_MAX, reset: () => replayer.reset() });
      control(req, res);
    } else replayer.handle(req, res);
  }, tls, opts.log && ((line: string) => opts.log?.(line, 'warn')));
  const host = opts.host ?? '127.0.0.1';
  const { port, url } = await start(server, opts.port ?? 8000, host, { idleTimeoutMs: REPLAY_IDLE_TIMEOUT_MS, ...opts.limits }).catch(async (e: Error) => {
    await replayer.close(); // lets go of the --record-missing folder's lock
    throw e;
  });
  return {
    url,
    port,
    host,
    caCert: tls?.caCertPath,
    exchanges: replayer.size,
    files: loaded.files,
    unservable: replayer.unservable,
    unmatched: () => replayer.unmatchedRequests(),
    unused: () => replayer.unused(),
    served: () => replayer.served(),
    recorded: () => replayer.recorded(),
    requests: () => replayer.recent(),
    summary,
    report: () => summaryJson(summary()),
    reset: () => replayer.reset(),
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await replayer.close();
        server.closeAllConnections();
        await closed;
        const s = summary();
        if ((opts.strict && s.unmatched.length) || (opts.strict === 'unused' && s.unused.length)) throw new StrictReplayError(s);
      })()),
  };
}
