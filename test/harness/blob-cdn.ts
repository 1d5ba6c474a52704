// In-process stand-in for a registry's blob CDN: the target of docker-registry's `redirect`
// storage middleware. Serves `root` (the registry's filesystem storage dir) read-only:
// GET/HEAD, single `Range: bytes=a-b` (206/416), Content-Type application/octet-stream.
import * as fs from 'fs';
import * as http from 'http';
import * as path from 'path';
import { closeServer, listenLoopback } from './http-util';

export interface CdnRequestRecord {
  time: string;
  method: string;
  url: string;
  userAgent: string;
  range?: string;
  /** scheme of the Authorization header, if a client sent one */
  auth?: string;
  status: number;
  bytes?: number;
}

export interface BlobCdn {
  /** http://127.0.0.1:PORT (no trailing slash) */
  url: string;
  port: number;
  root: string;
  requests: CdnRequestRecord[];
  close(): Promise<void>;
}

export async function startBlobCdn(opts: { root: string }): Promise<BlobCdn> {
  const base = path.resolve(opts.root);
  const requests: CdnRequestRecord[] = [];
  const srv = http.createServer((req, res) => {
    const rec: CdnRequestRecord = {
      time: new Date().toISOString(),
      method: req.method ?? '',
      url: req.url ?? '',
      userAgent: req.headers['user-agent'] ?? '',
      range: req.headers.range,
      auth: req.headers.authorization?.split(' ')[0],
      status: 0,
    };
    requests.push(rec);
    res.on('finish', () => {
      rec.status = res.statusCode;
    });
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' });
      res.end();
      return;
    }
    let p: string;
    try {
      p = path.join(base, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    } catch {
      res.writeHead(400);
      res.end();
      return;
    }
    if (!p.startsWith(base + path.sep)) {
      res.writeHead(403);
      res.end();
      return;
    }
    fs.stat(p, (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404, { 'Content-Type': 'text/plain' });
        res.end('not found\n');
        return;
      }
      const h: http.OutgoingHttpHeaders = {
        'Content-Type': 'application/octet-stream',
        'Accept-Ranges': 'bytes',
        ETag: `"${path.basename(path.dirname(p))}"`,
        'Last-Modified': st.mtime.toUTCString(),
        'Cache-Control': 'public, max-age=14400',
      };
      let start = 0;
      let end = st.size - 1;
      let code = 200;
      const m = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
      if (m && (m[1] !== '' || m[2] !== '')) {
        if (m[1] === '') start = Math.max(0, st.size - Number(m[2]));
        else {
          start = Number(m[1]);
          if (m[2] !== '') end = Math.min(Number(m[2]), st.size - 1);
        }
        if (start > end || start >= st.size) {
          res.writeHead(416, { 'Content-Range': `bytes */${st.size}` });
          res.end();
          return;
        }
        code = 206;
        h['Content-Range'] = `bytes ${start}-${end}/${st.size}`;
      }
      const n = Math.max(0, end - start + 1);
      h['Content-Length'] = n;
      rec.bytes = n;
      res.writeHead(code, h);
      if (req.method === 'HEAD' || n === 0) {
        res.end();
        return;
      }
      const rs = fs.createReadStream(p, { start, end });
      rs.on('error', () => res.destroy());
      rs.pipe(res);
    });
  });
  const port = await listenLoopback(srv);
  return { url: `http://127.0.0.1:${port}`, port, root: base, requests, close: () => closeServer(srv) };
}
