// What one client can hold of the replay server (issue 9, item 11): a client that never finishes its
// headers is cut with 408 while others are served, and idle keep-alive connections outlive the header
// timeout; connections past the cap are closed as they come; 10,000 misses of one request are one
// unmatched entry with count 10000.
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { replay, ReplayServer } from '../../src/replay/server';
import { request } from '../support/http';

const SEED = path.join(__dirname, '../../fixtures/seed/000_8e17b29b7c377181.txt');

/** A raw connection: everything it received, resolved when the server closed it. */
function rawSocket(port: number): { socket: net.Socket; connected: Promise<void>; closed: Promise<string> } {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => undefined);
  const connected = new Promise<void>((r) => socket.once('connect', () => r()));
  const closed = new Promise<string>((r) => socket.once('close', () => r(Buffer.concat(chunks).toString('latin1'))));
  return { socket, connected, closed };
}

/** A GET on a given keep-alive agent. */
function get(url: string, agent: http.Agent): Promise<{ status: number; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, socket: req.socket! }));
    });
    req.on('error', reject);
  });
}

describe('slow clients', () => {
  let server: ReplayServer;
  beforeAll(async () => {
    server = await replay({ fixtures: SEED, port: 0, limits: { headersTimeoutMs: 1000 } });
  });
  afterAll(() => server.close());

  it('a client that never finishes its headers gets 408 and is closed; the others are served meanwhile, idle keep-alive connections survive', async () => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const first = await get(`${server.url}/v2/`, agent);
    expect(first.status).toBe(401);
    const slow = rawSocket(server.port);
    await slow.connected;
    slow.socket.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
    // served while the slow one hangs
    expect((await request(`${server.url}/v2/`)).status).toBe(401);
    const got = await slow.closed;
    expect(got).toMatch(/^HTTP\/1\.1 408 /);
    // the header timeout has passed; the idle keep-alive connection is still there and still works
    const again = await get(`${server.url}/v2/`, agent);
    expect(again.status).toBe(401);
    expect(again.socket).toBe(first.socket);
    agent.destroy();
  });
});

describe('the connection cap', () => {
  let server: ReplayServer;
  beforeAll(async () => {
    server = await replay({ fixtures: SEED, port: 0, limits: { maxConnections: 3 } });
  });
  afterAll(() => server.close());

  it('connections past the cap are closed unanswered; once one goes, a new one is served', async () => {
    const agents = [0, 1, 2].map(() => new http.Agent({ keepAlive: true, maxSockets: 1 }));
    // three connections the server has accepted (each answered one request and stays open)
    for (const a of agents) expect((await get(`${server.url}/v2/`, a)).status).toBe(401);
    const fourth = rawSocket(server.port);
    await fourth.connected;
    fourth.socket.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect(await fourth.closed).toBe('');
    agents[0].destroy();
    const a = new http.Agent({ keepAlive: false });
    // the server sees the close asynchronously: retry until the freed slot is taken (bounded)
    let status = 0;
    for (let i = 0; i < 50 && status !== 401; i++) status = await get(`${server.url}/v2/`, a).then((r) => r.status, () => 0);
    expect(status).toBe(401);
    agents.forEach((g) => g.destroy());
  });
});

describe('unmatched requests are aggregated', () => {
  it('10,000 misses of one request: one entry, count 10000', async () => {
    const server = await replay({ fixtures: SEED, port: 0 });
    try {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
      let left = 10_000;
      const worker = async (): Promise<void> => {
        while (left-- > 0) {
          const r = await get(`${server.url}/nothing/here`, agent);
          expect(r.status).toBe(404);
        }
      };
      await Promise.all(Array.from({ length: 16 }, worker));
      agent.destroy();
      const un = server.unmatched();
      expect(un).toHaveLength(1);
      expect(un[0]).toMatchObject({ request: 'GET /nothing/here', count: 10_000 });
      expect(server.summary().unmatchedTotal).toBe(10_000);
    } finally {
      await server.close();
    }
  });
});
