/**
 * The replay server: fixtures in, registry answers out. Express serves; the Matcher decides;
 * bodies stream from the store.
 */
import express, { Request, Response } from 'express';
import { createReadStream } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { HeaderList, ORIGIN_PLACEHOLDER } from '../fixture/model';
import { LoadedExchange, loadFixtures } from '../fixture/files';
import { answerProtocolErrors, HOP_BY_HOP, listen, rawHeaderList } from '../http/server';
import { Matcher, Miss, RequestView } from './match';
import { errorBody } from '../registry/errors';
import { routeOf, unknownCode } from '../registry/routes';
import { freshTokenResponse } from '../registry/auth';

export interface ReplayOptions {
  /** Fixture folders and files. */
  fixtures: string | string[];
  port?: number;
  host?: string;
  /** One line per request on this function (default: none). */
  log?: (line: string) => void;
}

export interface ReplayServer {
  url: string;
  port: number;
  host: string;
  /** How many exchanges it can serve. */
  exchanges: number;
  /** Fixture files loaded. */
  files: string[];
  /** Requests captured without an answer (the seed's `auth` section): loaded, not servable. */
  unservable: LoadedExchange[];
  unmatched(): Miss[];
  unused(): LoadedExchange[];
  served(): number;
  close(): Promise<void>;
}

/** Reads stored bodies in 1 MiB pieces: with the 64 KiB default a blob streams at half the speed. */
const READ_CHUNK = 1024 * 1024;

export async function replay(opts: ReplayOptions): Promise<ReplayServer> {
  const paths = Array.isArray(opts.fixtures) ? opts.fixtures : [opts.fixtures];
  const loaded = await loadFixtures(paths);
  const matcher = new Matcher(loaded.exchanges);
  const misses: Miss[] = [];
  let served = 0;
  const log = opts.log ?? ((): void => undefined);

  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.use(async (req: Request, res: Response) => {
    const started = process.hrtime.bigint();
    const view: RequestView = { method: req.method, url: req.originalUrl, headers: rawHeaderList(req.rawHeaders) };
    if (routeOf(req.path).kind === 'token' && req.method === 'POST') {
      // The OAuth2 token POST carries its scope and service in the form body.
      const form = await readSmallBody(req, 64 * 1024);
      if (form === undefined) {
        res.writeHead(413, { 'content-type': 'text/plain' });
        res.end('token request body too large\n');
        return;
      }
      view.form = form;
    } else req.resume(); // other request bodies (pushes) are not compared yet; drain them
    const ex = matcher.match(view);
    const done = (status: number, bytes: number, note = ''): void => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log(`${req.method} ${req.originalUrl} ${status} ${bytes}B ${ms.toFixed(1)}ms${note}`);
    };
    if (!ex) {
      const miss = matcher.explain(view);
      misses.push(miss);
      const hint = miss.nearest.length ? miss.nearest.map((n) => `${n.request} (${n.source}: ${n.why})`).join('; ') : 'no fixtures at all';
      const message = `regtape: no fixture for ${miss.request}; nearest recorded: ${hint}`;
      const body = errorBody(unknownCode(routeOf(req.path)), message, { regtape: 'unmatched', nearest: miss.nearest });
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'docker-distribution-api-version': 'registry/2.0', 'x-regtape': 'unmatched' });
      res.end(req.method === 'HEAD' ? undefined : body);
      done(404, 0, ' UNMATCHED');
      return;
    }
    served++;
    serveExchange(req, res, ex, done);
  });

  const server = http.createServer(app);
  answerProtocolErrors(server);
  const host = opts.host ?? '127.0.0.1';
  await listen(server, opts.port ?? 8000, host);
  const port = (server.address() as AddressInfo).port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}`,
    port,
    host,
    exchanges: matcher.size,
    files: loaded.files,
    unservable: matcher.unservable,
    unmatched: () => [...misses],
    unused: () => matcher.unused(),
    served: () => served,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function serveExchange(req: Request, res: Response, ex: LoadedExchange, done: (s: number, b: number) => void): void {
  const out = ex.response!;
  const origin = `http://${req.headers.host ?? '127.0.0.1'}`;
  const headers: HeaderList = [];
  let body = out.body;
  if (body.kind === 'inline' && out.status === 200 && routeOf(req.path).kind === 'token') {
    const fresh = freshTokenResponse(body.text);
    if (fresh) body = { kind: 'inline', text: fresh };
  }
  for (const [n, v] of out.headers) {
    const lower = n.toLowerCase();
    if (HOP_BY_HOP.has(lower)) continue;
    // Content-Length follows the body we serve; a recorded HEAD (no body) keeps its recorded length.
    if (lower === 'content-length' && body.kind !== 'none') continue;
    headers.push([n, v.includes(ORIGIN_PLACEHOLDER) ? v.split(ORIGIN_PLACEHOLDER).join(origin) : v]);
  }
  const size = body.kind === 'inline' ? Buffer.byteLength(body.text) : body.kind === 'stored' ? body.size : 0;
  if (body.kind !== 'none') headers.push(['Content-Length', String(size)]);
  const flat: string[] = [];
  for (const [n, v] of headers) flat.push(n, v);
  res.writeHead(out.status, flat);
  if (req.method === 'HEAD' || body.kind === 'none') {
    res.end();
    done(out.status, 0);
    return;
  }
  if (body.kind === 'inline') {
    res.end(body.text);
    done(out.status, size);
    return;
  }
  const stream = createReadStream(ex.store.pathFor(body.digest), { highWaterMark: READ_CHUNK });
  stream.on('error', (e) => {
    // Headers are gone already: cut the connection so the client sees a short body, never a wrong one.
    process.stderr.write(`regtape: cannot read body ${body.digest}: ${e.message}\n`);
    res.destroy();
  });
  stream.pipe(res);
  // Go clients close as soon as they have Content-Length bytes, sometimes before 'finish': count what was read.
  let read = 0;
  stream.on('data', (c) => (read += c.length));
  res.once('close', () => done(out.status, read));
}

/** Reads a request body of at most `limit` bytes; undefined when it is larger. */
function readSmallBody(req: http.IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= limit) chunks.push(c);
    });
    req.on('end', () => resolve(size <= limit ? Buffer.concat(chunks).toString('utf8') : undefined));
    req.on('error', () => resolve(undefined));
  });
}
