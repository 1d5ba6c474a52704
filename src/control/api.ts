/**
 * The control API under /__regtape/, in the spirit of WireMock's /__admin: health, a machine-readable
 * summary, recent requests, and a reset between test cases. Express, where routing and JSON earn
 * their cost; registry traffic never passes through here.
 */
import express from 'express';
import type * as http from 'node:http';
import { TOKEN_PREFIX } from '../registry/auth';
import { REDIRECT_PREFIX } from '../registry/redirect';
import type { ReplaySummary, ServedRequest } from '../replay/replayer';

export const CONTROL_PREFIX = '/__regtape/';

/** A control API path (not one of regtape's token or redirect legs, which are registry traffic). */
export function isControlPath(url: string): boolean {
  return url.startsWith(CONTROL_PREFIX) && !url.startsWith(TOKEN_PREFIX) && !url.startsWith(REDIRECT_PREFIX);
}

export interface ControlTarget {
  summary(): ReplaySummary;
  requests(): ServedRequest[];
  reset(): void;
}

/** The summary as JSON: fixtures named by file:line, not as whole exchanges. */
export function summaryJson(s: ReplaySummary): unknown {
  return {
    served: s.served,
    unmatchedTotal: s.unmatchedTotal,
    unmatched: s.unmatched,
    unused: s.unused.map((u) => ({ request: `${u.request.method} ${u.request.url}`, source: u.source ? `${u.source.file}:${u.source.line}` : undefined })),
    recorded: s.recorded,
  };
}

export function controlApp(target: ControlTarget): http.RequestListener {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.get('/__regtape/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/__regtape/summary', (_req, res) => {
    res.json(summaryJson(target.summary()));
  });
  app.get('/__regtape/requests', (_req, res) => {
    res.json({ requests: target.requests() });
  });
  app.post('/__regtape/reset', (_req, res) => {
    target.reset();
    res.json({ status: 'reset' });
  });
  app.use((req, res) => {
    res.status(404).json({ error: `no control endpoint ${req.method} ${req.path}; try GET /__regtape/health, /__regtape/summary, /__regtape/requests or POST /__regtape/reset` });
  });
  return app;
}
