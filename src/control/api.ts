/**
 * The control API under /__regtape/, in the spirit of WireMock's /__admin: health, a machine-readable
 * summary, recent requests, and a reset between test cases. Express, where routing and JSON earn
 * their cost; registry traffic never passes through here, and control requests are never counted as
 * registry traffic (they are not served, unmatched or listed in /requests).
 *
 * The JSON shapes below are a contract (README "regtape as a service"): fields may be added, never
 * renamed or removed.
 */
import type createExpressApp from 'express';
import type * as http from 'node:http';
import { TOKEN_PREFIX } from '../registry/auth';
import { REDIRECT_PREFIX } from '../registry/redirect';
import type { ReplaySummary, ServedRequest } from '../replay/replayer';

export const CONTROL_PREFIX = '/__regtape/';

/** A control API path (not one of regtape's token or redirect legs, which are registry traffic). */
export function isControlPath(url: string): boolean {
  return url.startsWith(CONTROL_PREFIX) && !url.startsWith(TOKEN_PREFIX) && !url.startsWith(REDIRECT_PREFIX);
}

/** GET /__regtape/health: 200 while serving, 503 once shutting down. */
export interface HealthJson {
  status: 'serving' | 'closing';
  /** Exchanges loaded that can be served. */
  exchanges: number;
}

/** GET /__regtape/summary, `--report FILE`, and ReplayServer.report(). */
export interface SummaryJson {
  /** Requests answered since start or the last reset (from a fixture, or derived from the recording). */
  served: number;
  /** Each distinct unmatched request once (at most 1000), with how often it came and the nearest recordings. */
  unmatched: Array<{
    /** `METHOD /url` as the client sent it. */
    request: string;
    count: number;
    /** Up to 3 recorded requests most like it: `source` is `file:line`, `why` says what differs. */
    nearest: Array<{ request: string; source: string; why: string }>;
  }>;
  /** Unmatched requests, repeats (and distinct requests past the cap) included. */
  unmatchedTotal: number;
  /** Fixtures no request used since start or the last reset. */
  unused: Array<{ request: string; source?: string }>;
  /** Fixture files written by --record-missing since start. */
  recorded: string[];
}

/** GET /__regtape/requests: the newest requests, oldest first. */
export interface RequestsJson {
  requests: ServedRequest[];
  /** How many the server keeps at most (older ones are dropped). */
  max: number;
}

export interface ControlTarget {
  health(): HealthJson;
  summary(): ReplaySummary;
  requests(): ServedRequest[];
  /** The cap of requests(). */
  requestsMax: number;
  reset(): void;
}

/** The summary as JSON: fixtures named by file:line, not as whole exchanges. */
export function summaryJson(s: ReplaySummary): SummaryJson {
  return {
    served: s.served,
    unmatched: s.unmatched.map((m) => ({ request: m.request, count: m.count, nearest: m.nearest.map((n) => ({ request: n.request, source: n.source, why: n.why })) })),
    unmatchedTotal: s.unmatchedTotal,
    unused: s.unused.map((u) => ({ request: `${u.request.method} ${u.request.url}`, source: u.source ? `${u.source.file}:${u.source.line}` : undefined })),
    recorded: [...s.recorded],
  };
}

const ENDPOINTS = 'GET /__regtape/health, GET /__regtape/summary, GET /__regtape/requests[?limit=N] or POST /__regtape/reset';

export function controlApp(target: ControlTarget): http.RequestListener {
  // Loaded with the first control request: a replay that is never steered does not load express.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const express = require('express') as typeof createExpressApp;
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  // Answers describe the moment they were made: no cache between a test and the server.
  app.use((_req, res, next) => {
    res.set('cache-control', 'no-store');
    next();
  });
  app.get('/__regtape/health', (_req, res) => {
    const h = target.health();
    res.status(h.status === 'serving' ? 200 : 503).json(h);
  });
  app.get('/__regtape/summary', (_req, res) => {
    res.json(summaryJson(target.summary()));
  });
  app.get('/__regtape/requests', (req, res) => {
    const limit = req.query.limit;
    let list = target.requests();
    if (limit !== undefined) {
      if (typeof limit !== 'string' || !/^\d+$/.test(limit)) {
        res.status(400).json({ error: `limit must be a whole number, not ${JSON.stringify(limit)}` });
        return;
      }
      list = Number(limit) === 0 ? [] : list.slice(-Number(limit));
    }
    const body: RequestsJson = { requests: list, max: target.requestsMax };
    res.json(body);
  });
  app.post('/__regtape/reset', (_req, res) => {
    target.reset();
    res.json({ status: 'reset' });
  });
  app.all(['/__regtape/health', '/__regtape/summary', '/__regtape/requests', '/__regtape/reset'], (req, res) => {
    res.set('allow', req.path === '/__regtape/reset' ? 'POST' : 'GET, HEAD');
    res.status(405).json({ error: `${req.method} is not allowed on ${req.path}; use ${ENDPOINTS}` });
  });
  app.use((req, res) => {
    res.status(404).json({ error: `no control endpoint ${req.method} ${req.path}; use ${ENDPOINTS}` });
  });
  return app;
}
