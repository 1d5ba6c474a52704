import * as http from 'node:http';
import * as net from 'node:net';

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
}

/** A plain HTTP request on loopback; repeated header names are sent as separate lines. */
export function request(url: string, opts: { method?: string; headers?: Array<[string, string]>; body?: Buffer | string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    // With a raw header array node adds no Host header by itself.
    const flat: string[] = ['Host', new URL(url).host];
    for (const [n, v] of opts.headers ?? []) flat.push(n, v);
    const req = http.request(url, { method: opts.method ?? 'GET', headers: flat, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Sends raw bytes (a TLS ClientHello, say) and returns whatever comes back before the socket closes. */
export function rawExchange(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    s.on('error', reject);
  });
}

/** The first bytes of a real TLS 1.2/1.3 ClientHello record (what Go sends to an "insecure" registry). */
export const TLS_CLIENT_HELLO = Buffer.from('16030100a5010000a10303' + '00'.repeat(32) + '000002c02f0100', 'hex');
