// --resolve and --upstream-ca: parsing, and the agents really connecting elsewhere while TLS is checked
// for the name asked for (a local TLS server with a certificate for ghcr.io from a throw-away CA).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as https from 'node:https';
import * as http from 'node:http';
import { AddressInfo } from 'node:net';
import { parseResolve, upstreamAgents } from '../../src/record/upstream';
import { loadOrCreateCA } from '../../src/proxy/ca';

jest.setTimeout(60_000);

describe('parseResolve', () => {
  it('reads HOST=ADDR:PORT, HOST:PORT=ADDR:PORT, IPv6 in brackets, ADDR alone', () => {
    expect(parseResolve(['GHCR.io=127.0.0.1:5000', 'quay.io:443=[::1]:5001', 'x.test=10.0.0.1'])).toEqual([
      { host: 'ghcr.io', port: undefined, address: '127.0.0.1', toPort: 5000 },
      { host: 'quay.io', port: 443, address: '::1', toPort: 5001 },
      { host: 'x.test', port: undefined, address: '10.0.0.1', toPort: undefined },
    ]);
  });
  it('refuses what it cannot read, naming the value', () => {
    expect(() => parseResolve(['ghcr.io'])).toThrow('--resolve "ghcr.io": not HOST=ADDR[:PORT] (expected HOST=ADDR:PORT, e.g. ghcr.io=127.0.0.1:5000)');
    expect(() => parseResolve(['ghcr.io=127.0.0.1:99999'])).toThrow('--resolve "ghcr.io=127.0.0.1:99999": 99999 is not a port');
    expect(() => parseResolve(['ghcr.io=[nope]:1'])).toThrow(/not an IPv6 address|not HOST=ADDR/);
  });
});

describe('upstreamAgents', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-agents-'));
  let server: https.Server;
  let port: number;
  let caFile: string;
  const seen: string[] = [];
  beforeAll(async () => {
    const ca = await loadOrCreateCA(path.join(tmp, 'ca'));
    caFile = ca.certPath;
    const { cert, key } = await ca.issue(['ghcr.io']);
    server = https.createServer({ cert, key }, (req, res) => {
      seen.push(`${req.headers.host} ${(req.socket as import('node:tls').TLSSocket).servername}`);
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => {
    server.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  const get = (url: string, agent: http.Agent): Promise<string> =>
    new Promise((resolve) => {
      https
        .get(url, { agent }, (res) => {
          let b = '';
          res.on('data', (d: Buffer) => (b += d.toString()));
          res.on('end', () => resolve(`${res.statusCode} ${b}`));
        })
        .on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });

  it('connects to ADDR:PORT for HOST, sends SNI and Host for HOST, verifies the certificate for HOST with the extra CA', async () => {
    const a = upstreamAgents({ resolve: [`ghcr.io=127.0.0.1:${port}`], ca: caFile });
    try {
      expect(await get('https://ghcr.io/v2/', a.https)).toBe('200 ok');
      expect(seen.pop()).toBe('ghcr.io ghcr.io');
      expect(a.resolvedAt('ghcr.io', 443)).toBe(`127.0.0.1:${port} (--resolve)`);
      expect(a.resolvedAt('quay.io', 443)).toBeUndefined();
      // a name the certificate does not carry, sent to the same server: refused
      const b = upstreamAgents({ resolve: [`quay.io=127.0.0.1:${port}`], ca: caFile });
      expect(await get('https://quay.io/v2/', b.https)).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
      b.destroy();
    } finally {
      a.destroy();
    }
  });

  it('without the extra CA the certificate is not trusted', async () => {
    const a = upstreamAgents({ resolve: [`ghcr.io:443=127.0.0.1:${port}`] });
    try {
      expect(await get('https://ghcr.io/v2/', a.https)).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    } finally {
      a.destroy();
    }
  });

  it('refuses an --upstream-ca file without a certificate', () => {
    const f = path.join(tmp, 'empty.pem');
    fs.writeFileSync(f, 'nothing\n');
    expect(() => upstreamAgents({ ca: f })).toThrow(`--upstream-ca ${f}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)`);
  });
});
