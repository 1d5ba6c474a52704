/**
 * Testing a registry client against a regtape replay: no network, no registry, the same bytes every run.
 * In your project: `import { replay, ReplayServer, StrictReplayError } from 'regtape';`
 */
import * as path from 'node:path';
import { replay, ReplayServer, StrictReplayError } from '../../src';
import { pullManifestAndBlobs } from './registry-client';

// The recording bundled with regtape: demo/hello:v1, one config blob and one layer.
const FIXTURES = path.join(__dirname, '../hello-pull');

let registry: ReplayServer;

beforeAll(async () => {
  // port 0: a free port; strict: close() rejects if the client asked for anything that was not recorded.
  registry = await replay({ fixtures: FIXTURES, port: 0, strict: true });
});

afterAll(async () => {
  await registry.close(); // a StrictReplayError here fails the suite and names each unmatched request
});

test('pulls demo/hello:v1: manifest and every blob match their digests', async () => {
  const pulled = await pullManifestAndBlobs(registry.url, 'demo/hello', 'v1');

  expect(pulled.digest).toBe('sha256:ffd83494680ab9ca524f1fc6209df7007e3a0be1c52ce9580f0eaf4d0583d725');
  expect(pulled.blobs).toEqual([
    { digest: 'sha256:2ba781bc3d1c065b041f38dcaff10d51a647c94adf84819b732be53789d59ba8', size: 220 },
    { digest: 'sha256:bf047673486a9129e2ac1a0989e966fe99c525a33f4f018c5ba965ef29a1429e', size: 49564 },
  ]);
  expect(registry.unmatched()).toEqual([]);
});

test('strict mode: a request that was never recorded makes close() reject', async () => {
  // A server of its own, so the shared one above stays clean.
  const other = await replay({ fixtures: FIXTURES, port: 0, strict: true });
  // The client sees a registry 404 (MANIFEST_UNKNOWN) whose message names the nearest recording...
  await expect(pullManifestAndBlobs(other.url, 'demo/hello', 'v2')).rejects.toThrow(/HTTP 404.*no fixture for GET \/v2\/demo\/hello\/manifests\/v2/);
  // ...and close() reports it.
  await expect(other.close()).rejects.toBeInstanceOf(StrictReplayError);
});
