// verify and ls over hand-made fixture folders.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { serialize } from '../../src/fixture/files';
import { Body, Exchange, HeaderList } from '../../src/fixture/model';
import { formatListing, formatReport, ls, verify } from '../../src/inspect';

const sha256 = (b: Buffer | string): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-verify-'));
  dirs.push(d);
  return d;
}
/** How verify names a file: relative to the working directory, as replay does. */
const rel = (f: string): string => path.relative(process.cwd(), f);

function exchange(url: string, status: number, headers: HeaderList, body: Body, reqHeaders: HeaderList = []): Exchange {
  return {
    comments: [`GET ${url} -> ${status}`],
    request: { method: 'GET', url, headers: reqHeaders, body: { kind: 'none' } },
    response: { status, headers, body },
  };
}

class Folder {
  readonly dir = tempDir();
  write(name: string, exchanges: Exchange[], format: 'md' | 'yaml' = 'md'): string {
    const file = path.join(this.dir, name);
    fs.writeFileSync(file, serialize(exchanges, format));
    return file;
  }
  store(data: Buffer): Body {
    const digest = sha256(data);
    const p = this.bodyPath(digest);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, data);
    return { kind: 'stored', digest, size: data.length };
  }
  bodyPath(digest: string): string {
    return path.join(this.dir, 'bodies', 'sha256', digest.replace(/^sha256:/, ''));
  }
}

interface Recorded {
  f: Folder;
  repo: string;
  manifest: string;
  manifestDigest: string;
  manifestFile: string;
  config: string;
  layers: string[];
  layerFiles: string[];
}

/** A recorded pull of demo/hello:v1: ping, manifest (inline), config and two layers (stored). */
function recordedPull(f = new Folder(), repo = 'demo/hello', tag = 'v1'): Recorded {
  const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const layerBytes = [Buffer.alloc(70_000, 1), Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 251))];
  const cfg = f.store(configBytes);
  const layers = layerBytes.map((b) => f.store(b));
  const digestOf = (b: Body): string => (b as { digest: string }).digest;
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(cfg), size: configBytes.length },
    layers: layers.map((l, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digestOf(l), size: layerBytes[i].length })),
  });
  const manifestDigest = sha256(manifest);
  f.write('GET_v2.7e186c08.md', [exchange('/v2/', 200, [['content-length', '2']], { kind: 'inline', text: '{}' })]);
  const manifestFile = f.write(`GET_${repo.replace(/\//g, '_')}_manifests_${tag}.00000001.md`, [
    exchange(
      `/v2/${repo}/manifests/${tag}`,
      200,
      [
        ['content-length', String(Buffer.byteLength(manifest))],
        ['content-type', OCI_MANIFEST],
        ['docker-content-digest', manifestDigest],
      ],
      { kind: 'inline', text: manifest },
      [['accept', OCI_MANIFEST]],
    ),
  ]);
  const blobFile = (b: Body, i: number): string =>
    f.write(`GET_${repo.replace(/\//g, '_')}_blobs_${digestOf(b).slice(7, 19)}.0000000${i}.md`, [
      exchange(`/v2/${repo}/blobs/${digestOf(b)}`, 200, [['content-length', String((b as { size: number }).size)], ['docker-content-digest', digestOf(b)]], b),
    ]);
  blobFile(cfg, 2);
  const layerFiles = layers.map((l, i) => blobFile(l, 3 + i));
  return { f, repo, manifest, manifestDigest, manifestFile, config: digestOf(cfg), layers: layers.map(digestOf), layerFiles };
}

describe('verify', () => {
  it('a clean recording has no problems', async () => {
    const r = recordedPull();
    const report = await verify([r.f.dir]);
    expect(report.problems).toEqual([]);
    expect(report).toMatchObject({ files: 5, exchanges: 5, bodies: 3, notes: [] });
    expect(formatReport(report)).toBe('verified 5 fixtures (5 exchanges, 3 bodies): 0 problems\n');
  });

  it('a flipped byte in a stored layer: sha256 mismatch, naming the fixture and the digest', async () => {
    const r = recordedPull();
    const p = r.f.bodyPath(r.layers[1]);
    const bytes = fs.readFileSync(p);
    bytes[100] ^= 0xff;
    fs.writeFileSync(p, bytes);
    const report = await verify([r.f.dir]);
    expect(report.problems).toEqual([{ file: rel(r.layerFiles[1]), line: expect.any(Number), kind: 'body-sha256', message: expect.stringContaining('sha256 mismatch') }]);
    expect(report.problems[0].message).toContain(r.layers[1]);
    expect(report.problems[0].message).toContain(`its bytes hash to ${sha256(bytes)}`);
    expect(formatReport(report)).toMatch(new RegExp(`^${escape(rel(r.layerFiles[1]))}:2: body-sha256: body ${r.layers[1]} .*sha256 mismatch`));
    expect(formatReport(report)).toContain('verified 5 fixtures (5 exchanges, 3 bodies): 1 problem\n');
  });

  it('a truncated blob: a size problem (and not also a hash one)', async () => {
    const r = recordedPull();
    const p = r.f.bodyPath(r.layers[0]);
    fs.truncateSync(p, 1000);
    const report = await verify([r.f.dir]);
    expect(report.problems).toHaveLength(1);
    expect(report.problems[0]).toMatchObject({ file: rel(r.layerFiles[0]), line: 2, kind: 'body-size' });
    expect(report.problems[0].message).toContain(`body ${r.layers[0]}`);
    expect(report.problems[0].message).toContain('has 1000 bytes, the fixture says 70000');
  });

  it('a body missing from the store', async () => {
    const r = recordedPull();
    fs.rmSync(r.f.bodyPath(r.config));
    const report = await verify([r.f.dir]);
    expect(report.problems.map((p) => p.kind)).toEqual(['body-missing']);
    expect(report.problems[0].message).toContain(`body ${r.config} is missing from the body store`);
  });

  it('a missing layer (fixture and body deleted): a completeness problem on the manifest', async () => {
    const r = recordedPull();
    fs.rmSync(r.layerFiles[0]);
    fs.rmSync(r.f.bodyPath(r.layers[0]));
    const report = await verify([r.f.dir]);
    expect(report.problems).toEqual([
      {
        file: rel(r.manifestFile),
        line: 2,
        kind: 'incomplete',
        message: `layer ${r.layers[0]} of demo/hello:v1 is not in the recording: a pull would fail offline`,
      },
    ]);
  });

  it('a layer whose fixture is gone but whose body another 200 still stores is available (replay serves blobs by digest)', async () => {
    const r = recordedPull();
    // the same layer pulled from another repository
    const body = { kind: 'stored' as const, digest: r.layers[0], size: 70_000 };
    r.f.write('GET_other_blobs.00000009.md', [exchange(`/v2/other/img/blobs/${r.layers[0]}`, 200, [], body)]);
    fs.rmSync(r.layerFiles[0]);
    expect((await verify([r.f.dir])).problems).toEqual([]);
  });

  it("a manifest whose Docker-Content-Digest does not match its inline body; a wrong Content-Length", async () => {
    const r = recordedPull();
    const text = fs.readFileSync(r.manifestFile, 'utf8');
    const wrong = sha256('something else');
    fs.writeFileSync(r.manifestFile, text.replace(r.manifestDigest, wrong).replace(`'content-length': '${r.manifest.length}'`, `'content-length': '${r.manifest.length + 5}'`));
    const report = await verify([r.f.dir]);
    expect(report.problems).toEqual([
      { file: rel(r.manifestFile), line: 2, kind: 'content-length', message: `Content-Length ${r.manifest.length + 5} but the body has ${r.manifest.length} bytes` },
      {
        file: rel(r.manifestFile),
        line: 2,
        kind: 'manifest-digest',
        message: `Docker-Content-Digest ${wrong} of demo/hello:v1 does not match the manifest, whose bytes hash to ${r.manifestDigest}: a client would reject it`,
      },
    ]);
  });

  it('an unparseable fixture is a problem with its line, and the other files are still verified', async () => {
    const r = recordedPull();
    const broken = path.join(r.f.dir, 'GET_broken.0000000a.md');
    fs.writeFileSync(broken, '# hand-edited\n## in\n```\nurl /v2/\nmethod GET\n\nno body\n```\n\n## out\n```\nstatus 200\nbogus line here\n```\n');
    const brokenYaml = path.join(r.f.dir, 'GET_broken.0000000b.yaml');
    fs.writeFileSync(brokenYaml, 'exchanges:\n  - in:\n      method: GET\n      url: /v2/\n    out: [unclosed\n');
    // and a damaged body elsewhere: verification went on past the broken files
    const p = r.f.bodyPath(r.config);
    const bytes = fs.readFileSync(p);
    bytes[0] ^= 1;
    fs.writeFileSync(p, bytes);

    const report = await verify([r.f.dir]);
    expect(report.files).toBe(7);
    expect(report.exchanges).toBe(5);
    expect(report.problems.map((x) => [x.file, x.line, x.kind])).toEqual(
      [
        [rel(broken), 13, 'parse'],
        [rel(brokenYaml), expect.any(Number), 'parse'],
        [rel(path.join(r.f.dir, `GET_demo_hello_blobs_${r.config.slice(7, 19)}.00000002.md`)), 2, 'body-sha256'],
      ].sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : 1)),
    );
    expect(report.problems.find((x) => x.file === rel(broken))!.message).toContain('unexpected line "bogus line here"');
    expect(report.problems.find((x) => x.file === rel(brokenYaml))!.message).toMatch(/^YAML: /);
  });

  it('problems are ordered by file, then line', async () => {
    const r = recordedPull();
    for (const l of r.layers) fs.truncateSync(r.f.bodyPath(l), 10);
    fs.writeFileSync(path.join(r.f.dir, 'AAA.md'), '## in\n```\nurl /v2/\n');
    const report = await verify([r.f.dir]);
    const keys = report.problems.map((p) => `${p.file}:${String(p.line).padStart(6, '0')}`);
    expect(keys).toEqual([...keys].sort());
    expect(report.problems[0].file).toBe(rel(path.join(r.f.dir, 'AAA.md')));
    expect(report.problems).toHaveLength(3);
  });

  it('an index: each child manifest must be recorded; attestations are not required', async () => {
    const r = recordedPull();
    const missing = sha256('arm64 manifest');
    const index = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: r.manifestDigest, size: r.manifest.length, platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: OCI_MANIFEST, digest: missing, size: 500, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
        { mediaType: OCI_MANIFEST, digest: sha256('attestation'), size: 500, platform: { architecture: 'unknown', os: 'unknown' }, annotations: { 'vnd.docker.reference.type': 'attestation-manifest' } },
      ],
    });
    const indexFile = r.f.write('GET_demo_hello_manifests_multi.0000000c.md', [
      exchange('/v2/demo/hello/manifests/multi', 200, [['content-type', OCI_INDEX], ['docker-content-digest', sha256(index)]], { kind: 'inline', text: index }),
    ]);
    // the amd64 child was recorded by digest too
    r.f.write('GET_demo_hello_manifests_bydigest.0000000d.md', [
      exchange(`/v2/demo/hello/manifests/${r.manifestDigest}`, 200, [['content-type', OCI_MANIFEST], ['docker-content-digest', r.manifestDigest]], { kind: 'inline', text: r.manifest }),
    ]);
    const report = await verify([r.f.dir]);
    expect(report.problems).toEqual([
      {
        file: rel(indexFile),
        line: 2,
        kind: 'incomplete',
        message: `manifest ${missing} (linux/arm64/v8) listed in demo/hello:multi is not in the recording: a pull of that platform would fail offline`,
      },
    ]);
  });

  it('a blob behind a redirect chain (307 to /__regtape/redirect/...) is available; ls counts the follow-up for the repository', async () => {
    const r = recordedPull();
    fs.rmSync(r.layerFiles[1]);
    const location = `http://regtape.invalid/__regtape/redirect/http/cdn.example/docker/registry/v2/blobs/sha256/${r.layers[1].slice(7, 9)}/${r.layers[1].slice(7)}/data`;
    r.f.write('GET_demo_hello_blobs_redirected.0000000e.md', [exchange(`/v2/demo/hello/blobs/${r.layers[1]}`, 307, [['location', location]], { kind: 'none' })]);
    r.f.write('GET_redirect_cdn.0000000f.md', [exchange(new URL(location).pathname, 200, [['content-length', '5000']], { kind: 'stored', digest: r.layers[1], size: 5000 })]);
    expect((await verify([r.f.dir])).problems).toEqual([]);
    const listing = await ls([r.f.dir]);
    const repo = listing.repositories.find((x) => x.name === 'demo/hello')!;
    expect(repo.exchanges).toBe(5); // manifest, config, layer 0, the 307 and its follow-up
    expect(repo.blobs.find((b) => b.digest === r.layers[1])).toEqual({ digest: r.layers[1], size: 5000, stored: true });
  });

  it('a request recorded without a response is a note, not a problem', async () => {
    const r = recordedPull();
    const seed = path.join(r.f.dir, 'capture.txt');
    fs.writeFileSync(seed, '## in\n```\nurl /v2/\nmethod GET\n\nno body\n```\n## out\n```\nstatus 200\n\nno body\n```\nauth\n```\n{\n  accept: \'*/*\'\n}\n```\n');
    const report = await verify([r.f.dir]);
    expect(report.problems).toEqual([]);
    expect(report.notes).toEqual([`${rel(seed)}:14: GET /v2/ was recorded without a response: loaded, never served`]);
    expect(formatReport(report)).toContain(`note: ${rel(seed)}:14: GET /v2/`);
  });

  it('documentation files are not fixtures; a missing path is an error', async () => {
    const r = recordedPull();
    fs.writeFileSync(path.join(r.f.dir, 'README.md'), '# notes\nnothing to serve\n');
    expect((await verify([r.f.dir])).files).toBe(5);
    await expect(verify([path.join(r.f.dir, 'nope')])).rejects.toThrow('fixtures path not found');
  });

  it('the bundled example verifies clean', async () => {
    const report = await verify([path.join(__dirname, '../../examples/hello-pull')]);
    expect(report.problems).toEqual([]);
    expect(report.bodies).toBe(2);
  });
});

describe('ls', () => {
  it('lists repositories, tags, manifests and blobs, in a stable order', async () => {
    const r = recordedPull();
    recordedPull(r.f, 'alpha/app', 'latest');
    const listing = await ls([r.f.dir]);
    expect(listing.repositories.map((x) => x.name)).toEqual(['alpha/app', 'demo/hello']);
    const repo = listing.repositories[1];
    expect(repo.tags).toEqual([{ tag: 'v1', digest: r.manifestDigest, mediaType: OCI_MANIFEST }]);
    expect(repo.manifests).toEqual([{ digest: r.manifestDigest, mediaType: OCI_MANIFEST, size: r.manifest.length }]);
    expect(repo.blobs).toEqual(
      [
        { digest: r.config, size: fs.statSync(r.f.bodyPath(r.config)).size, stored: true },
        { digest: r.layers[0], size: 70_000, stored: true },
        { digest: r.layers[1], size: 5000, stored: true },
      ].sort((a, b) => (a.digest < b.digest ? -1 : 1)),
    );
    expect(repo.exchanges).toBe(4);
    // the same bytes in both repositories: stored once
    expect(listing.totals).toEqual({ files: 9, exchanges: 9, bodies: 3, storedBytes: 75_000 + fs.statSync(r.f.bodyPath(r.config)).size });

    const text = formatListing(listing);
    expect(text).toBe(formatListing(await ls([r.f.dir])));
    expect(text).toContain('demo/hello  (1 tag, 1 manifest, 3 blobs, 4 exchanges)');
    expect(text).toMatch(new RegExp(`tag +v1 +${r.manifestDigest} +${escape(OCI_MANIFEST)}`));
    expect(text).toMatch(new RegExp(`blob +${r.layers[0]} +70000 B \\(68\\.4 KiB\\) +stored`));
    expect(text.trimEnd().split('\n').pop()).toMatch(/^total: 9 fixtures, 9 exchanges, 3 stored bodies, \d+ B \(\d+\.\d KiB\)$/);
  });

  it('a referenced blob that was not recorded is listed as such; unparseable files are skipped', async () => {
    const r = recordedPull();
    fs.rmSync(r.layerFiles[0]);
    fs.rmSync(r.f.bodyPath(r.layers[0]));
    fs.writeFileSync(path.join(r.f.dir, 'bad.md'), '## in\n```\nmethod GET\n```\n');
    const listing = await ls([r.f.dir]);
    expect(listing.repositories[0].blobs.find((b) => b.digest === r.layers[0])).toEqual({ digest: r.layers[0], size: 70_000, stored: false });
    expect(listing.skipped.map((s) => s.file)).toEqual([rel(path.join(r.f.dir, 'bad.md'))]);
    const text = formatListing(listing);
    expect(text).toMatch(new RegExp(`blob +${r.layers[0]} +70000 B \\(68\\.4 KiB\\) +NOT RECORDED`));
    expect(text).toContain(`skipped ${rel(path.join(r.f.dir, 'bad.md'))}:3: `);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
