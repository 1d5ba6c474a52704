// Where the servers listen when no host is given: loopback only (127.0.0.1), never every interface.
import * as net from 'node:net';
import * as path from 'node:path';
import { record, replay } from '../../src';
import { FakeUpstream } from '../support/fake-upstream';
import { CliProcess } from '../support/cli';
import { freePort } from '../harness';
import { listeningAddresses } from '../support/reliability';
import * as fs from 'node:fs';
import * as os from 'node:os';

jest.setTimeout(60_000);
const EXAMPLE = path.join(__dirname, '../../examples/hello-pull');

/** Can a TCP connection be opened to host:port? (127.0.0.2 is loopback too, but not 127.0.0.1.) */
function connects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.setTimeout(3000, () => {
      s.destroy();
      resolve(false);
    });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('default listening address', () => {
  it('replay() without host listens on 127.0.0.1 only', async () => {
    const server = await replay({ fixtures: EXAMPLE, port: 0 });
    try {
      expect(server.host).toBe('127.0.0.1');
      expect(server.url).toBe(`http://127.0.0.1:${server.port}`);
      expect(listeningAddresses(server.port)).toEqual(['127.0.0.1']);
      expect(await connects('127.0.0.1', server.port)).toBe(true);
      expect(await connects('127.0.0.2', server.port)).toBe(false); // would connect if bound to 0.0.0.0
    } finally {
      await server.close();
    }
  });

  it('record() without host listens on 127.0.0.1 only', async () => {
    const up = await FakeUpstream.start();
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-listen-'));
    const rec = await record({ upstream: up.url, out, port: 0 });
    try {
      expect(rec.host).toBe('127.0.0.1');
      expect(listeningAddresses(rec.port)).toEqual(['127.0.0.1']);
      expect(await connects('127.0.0.2', rec.port)).toBe(false);
    } finally {
      await rec.close();
      await up.close();
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  it('`regtape replay` without --host listens on 127.0.0.1 only', async () => {
    const port = await freePort();
    const cli = new CliProcess(['replay', EXAMPLE, '--port', String(port), '--quiet']);
    try {
      expect(await cli.firstLine()).toContain(`on http://127.0.0.1:${port}`);
      expect(listeningAddresses(port)).toEqual(['127.0.0.1']);
      expect(await connects('127.0.0.2', port)).toBe(false);
    } finally {
      await cli.stop('SIGKILL');
    }
  });
});
