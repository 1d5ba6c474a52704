// `--store DIR`: bodies outside the fixture folder, in a store shared by several fixture sets (a CI
// cache). Recorded and served from the command line: skopeo pulls through `regtape record`, the
// upstream is stopped, and replay, verify and ls find the bodies only when given the same --store.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkDirImage, freePort, Harness, Image, pushImage, run } from '../harness';
import { CliProcess, runCli } from '../support/cli';

jest.setTimeout(180_000);

/** What git makes of a file's attributes, in a repository made in `dir`. */
async function gitAttrs(dir: string, file: string): Promise<Record<string, string>> {
  if (!fs.existsSync(path.join(dir, '.git'))) expect((await run('git', ['init', '-q', dir])).code).toBe(0);
  const r = await run('git', ['-C', dir, 'check-attr', 'binary', 'diff', 'filter', '--', file]);
  expect(r.code).toBe(0);
  return Object.fromEntries(r.stdout.trim().split('\n').map((l) => l.split(': ').slice(1) as [string, string]));
}

const storedBodies = (store: string): string[] => fs.readdirSync(path.join(store, 'sha256')).sort();

describe('record --store DIR, then replay / verify / ls with the same --store', () => {
  const h = new Harness();
  let image: Image;
  let other: Image;
  let store: string;
  let setA: string;
  let setB: string;

  /** Records a skopeo pull of `ref` through the CLI into `out`, bodies into `store`. */
  async function recordPull(upstream: string, ref: string, out: string): Promise<void> {
    const port = await freePort();
    const rec = new CliProcess(['record', '--upstream', upstream, '--port', String(port), '--out', out, '--store', store]);
    h.onCleanup(() => void rec.stop('SIGKILL'));
    await rec.firstLine();
    checkDirImage((await h.pullToDir(`127.0.0.1:${port}/${ref}`)).dir);
    expect(await rec.stop('SIGINT')).toBe(0);
  }

  beforeAll(async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    image = await h.makeImage({ layers: 2, layerSize: 200 * 1024, tag: 'v1' });
    other = await h.makeImage({ layers: 1, layerSize: 100 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/demo/one:v1`);
    await pushImage(image, `${reg.host}/demo/same:v1`);
    await pushImage(other, `${reg.host}/demo/other:v1`);
    store = h.tempDir('store');
    setA = h.tempDir('set-a');
    setB = h.tempDir('set-b');
    await recordPull(reg.url, 'demo/one:v1', setA);
    // A second fixture set: the same image under another name, and another image.
    await recordPull(reg.url, 'demo/same:v1', setB);
    await recordPull(reg.url, 'demo/other:v1', setB);
    await reg.stop();
  });
  afterAll(() => h.cleanup());

  it('keeps every body in the store, none in the fixture folders, each body once across both sets', () => {
    expect(fs.existsSync(path.join(setA, 'bodies'))).toBe(false);
    expect(fs.existsSync(path.join(setB, 'bodies'))).toBe(false);
    const expected = [...new Set([...image.layerDigests, image.configDigest, ...other.layerDigests, other.configDigest])].map((d) => d.slice('sha256:'.length)).sort();
    expect(storedBodies(store)).toEqual(expected);
    expect(fs.readdirSync(store).filter((n) => !n.startsWith('.'))).toEqual(['sha256']);
  });

  it('the store gets a .gitattributes that git applies: bodies binary, never diffed', async () => {
    expect(fs.readFileSync(path.join(store, '.gitattributes'), 'utf8')).toBe('# regtape: recorded bodies (layers) are binary: no diff, no merge\nsha256/** binary -diff\n');
    expect(await gitAttrs(store, `sha256/${image.layerDigests[0].slice(7)}`)).toEqual({ binary: 'set', diff: 'unset', filter: 'unspecified' });
  });

  it('replay without --store refuses, naming the missing body and the option', async () => {
    const r = await runCli(['replay', setA, '--port', '0']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/is missing from the body store .*pass the same --store/);
  });

  it('replay --store serves a byte-exact pull of each set offline', async () => {
    for (const [set, repo, img] of [[setA, 'demo/one', image], [setB, 'demo/other', other]] as const) {
      const port = await freePort();
      const rep = new CliProcess(['replay', set, '--store', store, '--port', String(port), '--strict']);
      h.onCleanup(() => void rep.stop('SIGKILL'));
      await rep.firstLine();
      const pulled = checkDirImage((await h.pullToDir(`127.0.0.1:${port}/${repo}:v1`)).dir);
      expect(pulled.manifestDigest).toBe(img.manifestDigest);
      expect(await rep.stop('SIGTERM')).toBe(0);
    }
  });

  it('verify and ls take the same --store', async () => {
    const ok = await runCli(['verify', setB, '--store', store]);
    expect(ok.stdout).toMatch(/: 0 problems$/m);
    expect(ok.code).toBe(0);
    const without = await runCli(['verify', setB]);
    expect(without.code).toBe(1);
    expect(without.stdout).toContain('body-missing');
    const listing = await runCli(['ls', setB, '--store', store]);
    expect(listing.code).toBe(0);
    expect(listing.stdout).toContain('demo/other');
  });
});

describe('record --lfs: the fixture folder marks bodies/ for Git LFS, keeping the user\'s own lines', () => {
  const h = new Harness();
  afterAll(() => h.cleanup());

  it('writes bodies/** with the LFS filter beside bodies/, once, after the lines already there', async () => {
    const reg = await h.startRegistry({ mode: 'plain' });
    const image = await h.makeImage({ layers: 1, layerSize: 100 * 1024, tag: 'v1' });
    await pushImage(image, `${reg.host}/demo/lfs:v1`);
    const out = h.tempDir('lfs');
    fs.writeFileSync(path.join(out, '.gitattributes'), '*.md text eol=lf\nbodies/** binary -diff\n');
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      const rec = new CliProcess(['record', '--upstream', reg.url, '--port', String(port), '--out', out, '--lfs']);
      h.onCleanup(() => void rec.stop('SIGKILL'));
      await rec.firstLine();
      checkDirImage((await h.pullToDir(`127.0.0.1:${port}/demo/lfs:v1`)).dir);
      expect(await rec.stop('SIGINT')).toBe(0);
    }
    expect(fs.readFileSync(path.join(out, '.gitattributes'), 'utf8')).toBe('*.md text eol=lf\nbodies/** filter=lfs diff=lfs merge=lfs -text\n');
    expect(await gitAttrs(out, `bodies/sha256/${image.layerDigests[0].slice(7)}`)).toEqual({ binary: 'unspecified', diff: 'lfs', filter: 'lfs' });
    expect(await gitAttrs(out, 'GET_v2.7e186c08.md')).toEqual({ binary: 'unspecified', diff: 'unspecified', filter: 'unspecified' });
  });
});
