// More real clients: podman (containers/image, like skopeo: TLS probe, /v2/ ping, GET manifest by tag) and
// ctr (containerd 1.6: no probe, no ping, HEAD manifest with one comma-joined Accept line, GET by digest,
// OAuth2 POST for tokens). Each pulls through `record`, the registry is stopped, and a fresh client state
// pulls from `replay`: the bytes must be the pushed image's. A recording made by skopeo alone must serve
// them too. Pushes through record and then to replay are in the 'pushes' block.
import { record, replay, ReplayServer } from '../../src';
import {
  checkDirImage,
  Containerd,
  createPodman,
  describeFailure,
  Harness,
  Image,
  pushImage,
  Registry,
  RegistryMode,
  RunResult,
  startContainerd,
} from '../harness';

jest.setTimeout(120_000);
const quiet = (): void => undefined;
// every client run gets its own limit, so that a hang shows up as that command's failure (with its stderr)
// rather than as a jest timeout of the whole hook
const CMD_TIMEOUT_MS = 30_000;
const limit = { timeoutMs: CMD_TIMEOUT_MS };

type Client = 'podman' | 'ctr';

function ok(r: RunResult, what: string): RunResult {
  if (r.code !== 0) throw new Error(`${what} failed: ${describeFailure(r)}`);
  return r;
}

/** What a replayed client run did, for assertions and for a readable failure. */
interface ReplayRun {
  result: RunResult;
  unmatched: ReturnType<ReplayServer['unmatched']>;
  log: string[];
  check?: Error;
}

function explain(run: ReplayRun): string {
  return [
    `client: ${run.result.command} -> exit ${run.result.code}`,
    run.result.code !== 0 ? describeFailure(run.result) : '',
    `unmatched: ${JSON.stringify(run.unmatched, null, 2)}`,
    `replay log:\n  ${run.log.join('\n  ')}`,
    run.check ? `check: ${run.check.message}` : '',
  ]
    .filter(Boolean)
    .join('\n');
}

/** A fresh client (its own state, empty caches) pulls REPO:TAG from `host`; checks the image if it worked. */
async function freshPull(
  h: Harness,
  client: Client,
  host: string,
  repo: string,
  image: Image,
  creds: string | undefined,
): Promise<{ result: RunResult; check?: Error }> {
  const ref = `${host}/${repo}:${image.tag}`;
  if (client === 'podman') {
    const p = createPodman({ tmp: h.tmp });
    h.onCleanup(() => p.remove());
    try {
      const result = await p.pull(ref, { creds, ...limit });
      let check: Error | undefined;
      if (result.code === 0) await p.checkImage(ref, image).catch((e: Error) => (check = e));
      return { result, check };
    } finally {
      await p.remove();
    }
  }
  const c = await startContainerd({ tmp: h.tmp });
  h.onCleanup(() => c.stop());
  try {
    const result = await c.pull(ref, { user: creds, ...limit });
    let check: Error | undefined;
    if (result.code === 0) await c.checkImage(ref, image).catch((e: Error) => (check = e));
    return { result, check };
  } finally {
    await c.stop();
  }
}

async function replayPull(h: Harness, fixtures: string, client: Client, repo: string, image: Image, creds?: string): Promise<ReplayRun> {
  const log: string[] = [];
  const rp = await replay({ fixtures, port: 0, log: (l) => log.push(l) });
  h.onCleanup(() => rp.close());
  try {
    const { result, check } = await freshPull(h, client, `127.0.0.1:${rp.port}`, repo, image, creds);
    return { result, check, unmatched: rp.unmatched(), log };
  } finally {
    await rp.close();
  }
}

function expectGoodReplay(run: ReplayRun): void {
  const detail = explain(run);
  // REGTAPE_SHOW_REPLAY=1: print what each replayed run did, even when it passes
  if (process.env.REGTAPE_SHOW_REPLAY === '1') process.stderr.write(`${expect.getState().currentTestName}\n${detail}\n\n`);
  // one assertion that carries everything needed to see why, when it fails
  expect({ exit: run.result.code, unmatched: run.unmatched, check: run.check?.message, detail: run.result.code === 0 && !run.check && run.unmatched.length === 0 ? 'ok' : detail }).toEqual({
    exit: 0,
    unmatched: [],
    check: undefined,
    detail: 'ok',
  });
}

const pullModes: Array<{ mode: RegistryMode; creds?: string }> = [{ mode: 'plain' }, { mode: 'hub', creds: 'alice:alicepw' }];

describe.each(pullModes)('podman and ctr pull through record, then from replay ($mode registry)', ({ mode, creds }) => {
  const h = new Harness();
  let reg: Registry;
  let image: Image;
  const repo = 'test/img';
  const fixtures = {} as Record<'skopeo' | Client, string>;

  beforeAll(async () => {
    reg = await h.startRegistry({ mode });
    image = await h.makeImage({ layers: 2, layerSize: 200 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/${repo}:v1`, creds, limit);

    // skopeo alone
    fixtures.skopeo = h.tempDir(`fixtures-skopeo-${mode}`);
    let rec = await record({ upstream: reg.url, out: fixtures.skopeo, port: 0, log: quiet });
    try {
      checkDirImage((await h.pullToDir(`127.0.0.1:${rec.port}/${repo}:v1`, creds, limit)).dir);
    } finally {
      await rec.close();
    }

    // each client through the recorder, with its own fresh state; the image must arrive intact
    for (const client of ['podman', 'ctr'] as const) {
      fixtures[client] = h.tempDir(`fixtures-${client}-${mode}`);
      rec = await record({ upstream: reg.url, out: fixtures[client], port: 0, log: quiet });
      try {
        const { result, check } = await freshPull(h, client, `127.0.0.1:${rec.port}`, repo, image, creds);
        ok(result, `${client} pull through record`);
        if (check) throw check;
      } finally {
        await rec.close();
      }
    }
    await reg.stop(); // registry, token server and CDN: from here on, no upstream
  });
  afterAll(() => h.cleanup());

  it.each(['podman', 'ctr'] as const)('%s pulls its own recording from replay, byte for byte', async (client) => {
    expectGoodReplay(await replayPull(h, fixtures[client], client, repo, image, creds));
  });

  it.each(['podman', 'ctr'] as const)('%s pulls from the replay of a skopeo-only recording', async (client) => {
    expectGoodReplay(await replayPull(h, fixtures.skopeo, client, repo, image, creds));
  });
});

// Three pushes, each recorded into its own folder and then repeated against replay by a second client state:
//  - podman: HEADs the blobs (404), uploads each (POST, PATCH, PUT ?digest=), PUTs the manifest. podman pushes
//    from containers-storage, so it recompresses the layers: new layer digests, a new manifest.
//  - ctr-upload: the image was imported from an OCI tar (no registry source): HEAD, POST, PUT ?digest= per
//    blob (one monolithic PUT), HEAD manifest (404), PUT manifest. The original bytes: same manifest digest.
//  - ctr-mount: the image was pulled from the registry, so containerd knows the source repo (its label key
//    is the host without the port: 127.0.0.1) and asks for cross-repo mounts (POST ?mount=&from=): no upload.
type Pusher = 'podman' | 'ctr-upload' | 'ctr-mount';
const pushers: Pusher[] = ['podman', 'ctr-upload', 'ctr-mount'];

describe('pushes', () => {
  const h = new Harness();
  let reg: Registry;
  let image: Image;
  const repo = 'test/img';
  const source = (): string => `${reg.host}/${repo}:v1`;
  const imported = 'regtape.test/img';
  // A: pushes through the recorder; B: the same push to the replayer. Each state got the image on its own
  // (from the registry, not recorded, or imported), with its own empty blob-info cache / content store.
  const clients = {} as Record<Pusher, { a: (dest: string) => Promise<RunResult>; b: (dest: string) => Promise<RunResult> }>;
  const fixtures = {} as Record<Pusher, string>;
  const recorded = {} as Record<Pusher, RunResult>;
  const arrived = {} as Record<Pusher, { manifestDigest?: string; error?: string }>;

  beforeAll(async () => {
    reg = await h.startRegistry({ mode: 'plain' });
    image = await h.makeImage({ layers: 2, layerSize: 200 * 1024, tag: 'v1' });
    await pushImage(image, source(), undefined, limit);
    const [podA, podB] = [createPodman({ tmp: h.tmp }), createPodman({ tmp: h.tmp })];
    h.onCleanup(() => podA.remove());
    h.onCleanup(() => podB.remove());
    const ctrds: Containerd[] = await Promise.all([0, 1, 2, 3].map(() => startContainerd({ tmp: h.tmp })));
    for (const c of ctrds) h.onCleanup(() => c.stop());
    const [upA, upB, mountA, mountB] = ctrds;
    for (const p of [podA, podB]) ok(await p.pull(source(), limit), 'podman pull from the registry');
    for (const c of [mountA, mountB]) ok(await c.pull(source(), limit), 'ctr pull from the registry');
    for (const c of [upA, upB]) await c.importImage(image, imported);
    clients.podman = { a: (d) => podA.push(source(), d, limit), b: (d) => podB.push(source(), d, limit) };
    clients['ctr-upload'] = { a: (d) => upA.push(d, `${imported}:v1`, limit), b: (d) => upB.push(d, `${imported}:v1`, limit) };
    clients['ctr-mount'] = { a: (d) => mountA.push(d, source(), limit), b: (d) => mountB.push(d, source(), limit) };

    for (const client of pushers) {
      fixtures[client] = h.tempDir(`fixtures-push-${client}`);
      const rec = await record({ upstream: reg.url, out: fixtures[client], port: 0, log: quiet });
      try {
        recorded[client] = await clients[client].a(`127.0.0.1:${rec.port}/test/pushed-${client}:v1`);
      } finally {
        await rec.close();
      }
      // what was pushed arrived (checked against the registry itself)
      if (recorded[client].code === 0) {
        try {
          arrived[client] = { manifestDigest: checkDirImage((await h.pullToDir(`${reg.host}/test/pushed-${client}:v1`, undefined, limit)).dir).manifestDigest };
        } catch (e) {
          arrived[client] = { error: (e as Error).message };
        }
      }
    }
    await reg.stop();
    await Promise.all([podA.remove(), upA.stop(), mountA.stop()]);
  });
  afterAll(() => h.cleanup());

  it.each(pushers)('%s pushes through record, then the same push to replay with the registry stopped', async (client) => {
    ok(recorded[client], `${client} push through record`);
    expect(arrived[client].error).toBeUndefined();
    // ctr pushes the image as it is; podman recompresses, so only ctr's manifest digest is known in advance
    if (client !== 'podman') expect(arrived[client].manifestDigest).toBe(image.manifestDigest);
    const log: string[] = [];
    const rp = await replay({ fixtures: fixtures[client], port: 0, log: (l) => log.push(l) });
    h.onCleanup(() => rp.close());
    try {
      const result = await clients[client].b(`127.0.0.1:${rp.port}/test/pushed-${client}:v1`);
      expectGoodReplay({ result, unmatched: rp.unmatched(), log });
    } finally {
      await rp.close();
    }
  });
});
