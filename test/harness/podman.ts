// Rootful podman 4.3 (Debian) for e2e tests, with throw-away state. There is no daemon: every call is
// a short `podman` run with these global flags, all state in one temp dir:
//   podman --root D/root --runroot D/runroot --storage-driver vfs --cgroup-manager cgroupfs
//          --events-backend file --tmpdir D/libpod
// and an environment that keeps it off the host's configuration:
//  - CONTAINERS_CONF, CONTAINERS_REGISTRIES_CONF, CONTAINERS_STORAGE_CONF: private (almost empty) files;
//    REGISTRY_AUTH_FILE: a private, empty auth file (pass creds to pull/push);
//  - HOME=D/home holding .config/containers/policy.json (accept anything) and an empty registries.d:
//    containers/image reads $HOME/.config/containers/{policy.json,registries.d} before /etc/containers;
//  - TMPDIR=D/tmp: podman stages big files in /var/tmp otherwise;
//  - the blob-info cache. As root, podman (like skopeo) keeps it in /var/lib/containers/cache, shared with
//    every skopeo/podman/buildah on the machine (it does NOT put it under --root). That cache changes push
//    sequences (HEADs on other repos, cross-repo mount POSTs) and lets pulls skip layers. As with skopeo,
//    _CONTAINERS_ROOTLESS_UID (read only by containers/image's cache-location code; podman still runs as
//    real root, since its rootless check is the EUID) plus XDG_DATA_HOME=D/data moves it to
//    D/data/containers/cache: empty when the Podman is created, shared by that Podman's calls only.
// vfs leaves root-owned copies of every layer under D/root: remove() deletes D.
// Plain-http registries: pass tlsVerify false (the default here); podman then sends a TLS ClientHello
// first and falls back to http when it gets an HTTP answer.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { Image } from './image';
import { describeFailure, run, RunOptions, RunResult } from './run';
import { killProcessesUsing, mountsUnder } from './sys';
import { defaultTempDirs, TempDirs } from './tmp';

export interface PodmanOptions {
  /** tracker for the state dir (default: the process-wide one); remove() deletes it anyway */
  tmp?: TempDirs;
  /** podman binary (default $REGTAPE_PODMAN or 'podman') */
  binary?: string;
  /** storage driver (default vfs: no mounts, works anywhere) */
  storageDriver?: string;
}

export interface PodmanTransferOptions extends RunOptions {
  /** 'user:password' (--creds) */
  creds?: string;
  /** --tls-verify (default false: plain http on loopback) */
  tlsVerify?: boolean;
}

export interface PodmanImageInfo {
  /** image ID = the config digest's hex */
  id: string;
  /** digest of the manifest it was pulled with */
  digest: string;
  repoDigests: string[];
  repoTags: string[];
  /** uncompressed layer digests (the config's diff_ids) */
  diffIds: string[];
}

export interface Podman {
  stateDir: string;
  root: string;
  runroot: string;
  /** where this Podman's private blob-info cache lives (created on first use) */
  blobInfoCacheDir: string;
  /** the environment every call gets */
  env: NodeJS.ProcessEnv;
  /** `podman <global flags> ARGS`; never rejects (see run()) */
  podman(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** podman pull [--tls-verify=false] [--creds] REF */
  pull(ref: string, opts?: PodmanTransferOptions): Promise<RunResult>;
  /** podman push [--tls-verify=false] [--creds] SRC [DEST] */
  push(src: string, dest?: string, opts?: PodmanTransferOptions): Promise<RunResult>;
  /** podman image inspect REF, the fields tests care about; throws if podman fails */
  inspect(ref: string): Promise<PodmanImageInfo>;
  /** the manifest bytes podman stored for the image (exactly as the registry served them), or undefined */
  storedManifest(imageId: string, manifestDigest: string): Buffer | undefined;
  /** compressed digests of the layers in storage (what was downloaded), from vfs-layers/layers.json */
  storedCompressedDigests(): string[];
  /**
   * Throws unless REF in this podman's storage is `image`, byte for byte: image ID, manifest digest,
   * stored manifest and config bytes, compressed layer digests (verified by podman while pulling) and
   * uncompressed layer digests; and `podman push REF dir:` gives files that hash to their names.
   */
  checkImage(ref: string, image: Image): Promise<void>;
  /** delete the state dir (root-owned vfs layers included); kills any process still using it; idempotent */
  remove(): Promise<void>;
}

const PODMAN = (): string => process.env.REGTAPE_PODMAN ?? 'podman';

const b64name = (s: string): string => '=' + Buffer.from(s).toString('base64');
const sha256hex = (b: Buffer): string => crypto.createHash('sha256').update(b).digest('hex');

/** Create a throw-away rootful podman setup (no process keeps running). */
export function createPodman(opts: PodmanOptions = {}): Podman {
  const tmp = opts.tmp ?? defaultTempDirs;
  const bin = opts.binary ?? PODMAN();
  const stateDir = tmp.make('podman');
  const d = (...p: string[]): string => {
    const x = path.join(stateDir, ...p);
    fs.mkdirSync(x, { recursive: true });
    return x;
  };
  const root = d('root');
  const runroot = d('runroot');
  const libpodTmp = d('libpod');
  const home = d('home');
  const containersConfDir = d('home', '.config', 'containers');
  d('home', '.config', 'containers', 'registries.d');
  fs.writeFileSync(path.join(containersConfDir, 'policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }) + '\n');
  const registriesConf = path.join(stateDir, 'registries.conf');
  fs.writeFileSync(registriesConf, '# regtape harness: no search registries, no mirrors, no short names\nunqualified-search-registries = []\nshort-name-mode = "disabled"\n');
  const storageConf = path.join(stateDir, 'storage.conf');
  fs.writeFileSync(storageConf, `[storage]\ndriver = "${opts.storageDriver ?? 'vfs'}"\nrunroot = "${runroot}"\ngraphroot = "${root}"\n`);
  const containersConf = path.join(stateDir, 'containers.conf');
  fs.writeFileSync(containersConf, `[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\nimage_copy_tmp_dir = "${d('tmp')}"\n`);
  const authFile = path.join(stateDir, 'auth.json');
  fs.writeFileSync(authFile, '{"auths":{}}\n');
  const dataHome = d('data');

  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(CONTAINERS_|REGISTRY_AUTH_FILE$|DOCKER_|XDG_|_CONTAINERS_)/.test(k) || /^(https?|all|no)_proxy$/i.test(k)) continue;
    env[k] = v;
  }
  Object.assign(env, {
    HOME: home,
    XDG_DATA_HOME: dataHome,
    XDG_CONFIG_HOME: path.join(home, '.config'),
    XDG_RUNTIME_DIR: d('run'),
    TMPDIR: path.join(stateDir, 'tmp'),
    CONTAINERS_CONF: containersConf,
    CONTAINERS_REGISTRIES_CONF: registriesConf,
    CONTAINERS_STORAGE_CONF: storageConf,
    REGISTRY_AUTH_FILE: authFile,
    DOCKER_CONFIG: d('docker'),
  });
  if ((process.geteuid?.() ?? 0) === 0) env._CONTAINERS_ROOTLESS_UID = '65534';

  const globals = [
    '--root', root,
    '--runroot', runroot,
    '--storage-driver', opts.storageDriver ?? 'vfs',
    '--cgroup-manager', 'cgroupfs',
    '--events-backend', 'file',
    '--tmpdir', libpodTmp,
  ];
  const podman = (args: string[], runOpts: RunOptions = {}): Promise<RunResult> =>
    run(bin, [...globals, ...args], { timeoutMs: 60_000, ...runOpts, env: { ...env, ...runOpts.env }, cwd: runOpts.cwd ?? stateDir });

  const transferFlags = (o: PodmanTransferOptions): string[] => {
    const f = [`--tls-verify=${o.tlsVerify ?? false}`];
    if (o.creds) f.push('--creds', o.creds);
    return f;
  };

  const inspect = async (ref: string): Promise<PodmanImageInfo> => {
    const r = await podman(['image', 'inspect', ref]);
    if (r.code !== 0) throw new Error(`podman image inspect ${ref} failed: ${describeFailure(r)}`);
    const [j] = JSON.parse(r.stdout) as Array<{ Id: string; Digest: string; RepoDigests?: string[]; RepoTags?: string[]; RootFS?: { Layers?: string[] } }>;
    return { id: j.Id, digest: j.Digest, repoDigests: j.RepoDigests ?? [], repoTags: j.RepoTags ?? [], diffIds: j.RootFS?.Layers ?? [] };
  };

  const storedManifest = (imageId: string, manifestDigest: string): Buffer | undefined => {
    const dir = path.join(root, `${opts.storageDriver ?? 'vfs'}-images`, imageId);
    for (const name of [b64name(`manifest-${manifestDigest}`), 'manifest']) {
      const f = path.join(dir, name);
      if (fs.existsSync(f)) {
        const b = fs.readFileSync(f);
        if (name === 'manifest' && `sha256:${sha256hex(b)}` !== manifestDigest) continue;
        return b;
      }
    }
    return undefined;
  };

  const storedCompressedDigests = (): string[] => {
    const f = path.join(root, `${opts.storageDriver ?? 'vfs'}-layers`, 'layers.json');
    if (!fs.existsSync(f)) return [];
    const layers = JSON.parse(fs.readFileSync(f, 'utf8')) as Array<{ 'compressed-diff-digest'?: string }>;
    return layers.map((l) => l['compressed-diff-digest']).filter((x): x is string => !!x);
  };

  const checkImage = async (ref: string, image: Image): Promise<void> => {
    const info = await inspect(ref);
    const problems: string[] = [];
    if (`sha256:${info.id}` !== image.configDigest) problems.push(`image ID ${info.id}, expected the config digest ${image.configDigest}`);
    if (info.digest !== image.manifestDigest) problems.push(`manifest digest ${info.digest}, expected ${image.manifestDigest}`);
    if (JSON.stringify(info.diffIds) !== JSON.stringify(image.diffIds)) problems.push(`diff IDs ${info.diffIds.join(',')}, expected ${image.diffIds.join(',')}`);
    const m = storedManifest(info.id, image.manifestDigest);
    if (!m) problems.push(`no stored manifest ${image.manifestDigest}`);
    else if (!m.equals(image.manifestBytes)) problems.push('the stored manifest differs from the pushed one');
    const cfg = path.join(root, `${opts.storageDriver ?? 'vfs'}-images`, info.id, b64name(image.configDigest));
    if (!fs.existsSync(cfg) || !fs.readFileSync(cfg).equals(image.configBytes)) problems.push(`the stored config ${image.configDigest} is missing or differs`);
    const compressed = storedCompressedDigests();
    for (const l of image.layerDigests) if (!compressed.includes(l)) problems.push(`layer ${l} is not in storage (compressed digests there: ${compressed.join(',')})`);
    // export: the files podman gives back hash to their names (layers come out uncompressed: diff IDs)
    const out = path.join(stateDir, 'export', crypto.randomBytes(4).toString('hex'));
    fs.mkdirSync(path.dirname(out), { recursive: true });
    const r = await podman(['push', '-q', ref, `dir:${out}`]);
    if (r.code !== 0) problems.push(`podman push ${ref} dir: failed: ${describeFailure(r)}`);
    else {
      const names = fs.readdirSync(out).filter((f) => /^[0-9a-f]{64}$/.test(f));
      for (const f of names) {
        const got = sha256hex(fs.readFileSync(path.join(out, f)));
        if (got !== f) problems.push(`exported blob ${f} hashes to ${got}`);
      }
      const want = [image.configDigest, ...image.diffIds].map((x) => x.slice('sha256:'.length)).sort();
      if (JSON.stringify(names.sort()) !== JSON.stringify(want)) problems.push(`exported blobs ${names.join(',')}, expected ${want.join(',')}`);
      fs.rmSync(out, { recursive: true, force: true });
    }
    if (problems.length) throw new Error(`podman image ${ref} is not the expected image:\n  ${problems.join('\n  ')}`);
  };

  let removing: Promise<void> | undefined;
  const remove = (): Promise<void> => {
    removing ??= (async () => {
      // podman runs to completion, but a killed run could leave a child (conmon, a pause process) behind
      await killProcessesUsing(stateDir);
      for (const m of mountsUnder(stateDir)) await run('umount', ['-l', m], { timeoutMs: 10_000 });
      tmp.remove(stateDir);
    })();
    return removing;
  };

  return {
    stateDir,
    root,
    runroot,
    blobInfoCacheDir: path.join(dataHome, 'containers', 'cache'),
    env,
    podman,
    pull: (ref, o = {}) => podman(['pull', ...transferFlags(o), ref], o),
    push: (src, dest, o = {}) => podman(['push', ...transferFlags(o), src, ...(dest ? [dest] : [])], o),
    inspect,
    storedManifest,
    storedCompressedDigests,
    checkImage,
    remove,
  };
}
