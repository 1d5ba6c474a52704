// Real registry clients, run hermetically: they never read or write root's own configuration
// (auth files, docker config, containers policy, blob-info cache).
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Image } from './image';
import { describeFailure, run, RunOptions, RunResult } from './run';
import { defaultTempDirs, TempDirs } from './tmp';

export interface ClientOptions extends RunOptions {
  /** tracker for temp dirs that outlive the call (pullToDir's output); default: the process-wide one */
  tmp?: TempDirs;
}

export interface SkopeoResult extends RunResult {
  /** the (already removed) directory that held this run's private blob-info cache */
  blobInfoCacheDir: string;
}

const SKOPEO = (): string => process.env.REGTAPE_SKOPEO ?? 'skopeo';
const DOCKER = (): string => process.env.REGTAPE_DOCKER ?? 'docker';

/**
 * Run skopeo with a private, empty configuration and blob-info cache:
 *  - containers/image keeps its blob-info cache (which registry/repo already has which blob) in
 *    /var/lib/containers/cache for root, shared by skopeo/podman/buildah; it changes push sequences
 *    (extra HEADs, cross-repo mount POSTs). For a non-root EUID it lives in $XDG_DATA_HOME/containers/cache
 *    instead, and the EUID it checks can be set with _CONTAINERS_ROOTLESS_UID. So we set
 *    _CONTAINERS_ROOTLESS_UID (when root) and XDG_DATA_HOME=<fresh temp dir>: every call starts with an
 *    empty cache, and the host's cache is neither read nor created. (No mount namespace needed.)
 *  - HOME, XDG_CONFIG_HOME, XDG_RUNTIME_DIR, DOCKER_CONFIG and REGISTRY_AUTH_FILE point into the temp
 *    dir, so no credentials from the host are picked up: pass --creds/--src-creds/--dest-creds.
 *  - global --policy (accept anything), --registries-conf (empty) and --registries.d (empty),
 *    --tmpdir and TMPDIR in the temp dir too. The temp dir is removed after the run.
 * TLS flags (--tls-verify=false etc.) are the caller's business.
 */
export async function skopeo(args: string[], opts: RunOptions = {}): Promise<SkopeoResult> {
  const t = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-skopeo-'));
  try {
    const d = (name: string): string => {
      const p = path.join(t, name);
      fs.mkdirSync(p, { recursive: true });
      return p;
    };
    const policy = path.join(t, 'policy.json');
    fs.writeFileSync(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    const registriesConf = path.join(t, 'registries.conf');
    fs.writeFileSync(registriesConf, '# regtape harness: no search registries, no mirrors\n');
    const authFile = path.join(t, 'auth.json');
    fs.writeFileSync(authFile, '{"auths":{}}\n');
    const dataHome = d('data');
    const tmpDir = d('tmp');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      ...opts.env,
      HOME: d('home'),
      XDG_DATA_HOME: dataHome,
      XDG_CONFIG_HOME: d('config'),
      XDG_RUNTIME_DIR: d('run'),
      DOCKER_CONFIG: d('docker'),
      REGISTRY_AUTH_FILE: authFile,
      TMPDIR: tmpDir,
    };
    const euid = process.geteuid?.() ?? 0;
    if (euid === 0) env._CONTAINERS_ROOTLESS_UID = '65534';
    const globals = ['--policy', policy, '--registries-conf', registriesConf, '--registries.d', d('registries.d'), '--tmpdir', tmpDir];
    const r = await run(SKOPEO(), [...globals, ...args], { ...opts, env });
    return { ...r, blobInfoCacheDir: path.join(dataHome, 'containers', 'cache') };
  } finally {
    fs.rmSync(t, { recursive: true, force: true });
  }
}

export interface PushResult extends SkopeoResult {
  /** the manifest digest skopeo reports for the pushed image (--digestfile) */
  digest: string;
}

/** skopeo copy oci:DIR:TAG docker://DEST; throws (with stderr) on failure. dest is 'HOST/repo:tag'. */
export async function pushImage(image: Image, dest: string, creds?: string, opts: RunOptions = {}): Promise<PushResult> {
  const digestFile = path.join(os.tmpdir(), `regtape-digest-${crypto.randomBytes(6).toString('hex')}`);
  try {
    const args = ['copy', '--dest-tls-verify=false', '--digestfile', digestFile];
    if (creds) args.push('--dest-creds', creds);
    args.push(image.ref, `docker://${dest}`);
    const r = await skopeo(args, opts);
    if (r.code !== 0) throw new Error(`push of ${image.ref} to ${dest} failed: ${describeFailure(r)}`);
    return { ...r, digest: fs.readFileSync(digestFile, 'utf8').trim() };
  } finally {
    fs.rmSync(digestFile, { force: true });
  }
}

/** skopeo copy docker://SRC dir:TMP; throws (with stderr) on failure. src is 'HOST/repo:tag'. */
export async function pullToDir(src: string, creds?: string, opts: ClientOptions = {}): Promise<{ dir: string; manifestBytes: Buffer }> {
  const tmp = opts.tmp ?? defaultTempDirs;
  const dir = tmp.make('pull');
  const args = ['copy', '--src-tls-verify=false'];
  if (creds) args.push('--src-creds', creds);
  args.push(`docker://${src}`, `dir:${dir}`);
  const r = await skopeo(args, opts);
  if (r.code !== 0) {
    tmp.remove(dir);
    throw new Error(`pull of ${src} failed: ${describeFailure(r)}`);
  }
  return { dir, manifestBytes: fs.readFileSync(path.join(dir, 'manifest.json')) };
}

interface Descriptor {
  digest: string;
  size: number;
}

const hexOf = (digest: string): string => {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new Error(`not a sha256 digest: ${digest}`);
  return m[1];
};

/**
 * Check a skopeo `dir:` image: every blob file's sha256 equals its name, and every blob the
 * manifest lists is there with the listed size. Returns the manifest digest and the blob digests
 * (config first, then layers). Throws an error naming the first bad digest.
 */
export function checkDirImage(dir: string): { manifestDigest: string; blobs: string[] } {
  const manifestBytes = fs.readFileSync(path.join(dir, 'manifest.json'));
  const manifestDigest = `sha256:${crypto.createHash('sha256').update(manifestBytes).digest('hex')}`;
  const m = JSON.parse(manifestBytes.toString('utf8')) as { config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[] };
  if (m.manifests) throw new Error(`${dir}/manifest.json is an index/manifest list, not an image manifest`);
  if (!m.config || !Array.isArray(m.layers)) throw new Error(`${dir}/manifest.json has no config or layers`);
  const listed = [m.config, ...m.layers];
  // every file that is named like a blob must hash to its name
  for (const f of fs.readdirSync(dir)) {
    if (!/^[0-9a-f]{64}$/.test(f)) continue;
    const got = crypto.createHash('sha256').update(fs.readFileSync(path.join(dir, f))).digest('hex');
    if (got !== f) throw new Error(`blob sha256:${f} in ${dir} is corrupt: its content hashes to sha256:${got}`);
  }
  for (const d of listed) {
    const file = path.join(dir, hexOf(d.digest));
    if (!fs.existsSync(file)) throw new Error(`blob ${d.digest} listed in the manifest is missing from ${dir}`);
    const size = fs.statSync(file).size;
    if (size !== d.size) throw new Error(`blob ${d.digest} in ${dir} has ${size} bytes, the manifest says ${d.size}`);
  }
  return { manifestDigest, blobs: listed.map((d) => d.digest) };
}

/** skopeo inspect --raw --tls-verify=false docker://REF: the manifest bytes as the registry serves them. */
export async function skopeoInspectRaw(ref: string, creds?: string, opts: RunOptions = {}): Promise<Buffer> {
  const args = ['inspect', '--raw', '--tls-verify=false'];
  if (creds) args.push('--creds', creds);
  args.push(`docker://${ref.replace(/^docker:\/\//, '')}`);
  const r = await skopeo(args, opts);
  if (r.code !== 0) throw new Error(`skopeo inspect --raw ${ref} failed: ${describeFailure(r)}`);
  return r.stdoutBuffer;
}

export interface DockerManifestInspectOptions extends RunOptions {
  /** use this DOCKER_CONFIG dir as is (the caller owns it); default: a fresh temp dir, removed afterwards */
  configDir?: string;
  /** written into the fresh config.json as {"auths":{host:{auth: base64(user:password)}}} */
  creds?: { host: string; user: string; password: string };
  /** pass --insecure (default true) */
  insecure?: boolean;
}

/** `docker manifest inspect [--insecure] REF` with DOCKER_CONFIG pointing at a private dir (no daemon needed). */
export async function dockerManifestInspect(ref: string, opts: DockerManifestInspectOptions = {}): Promise<RunResult> {
  let own: string | undefined;
  let configDir = opts.configDir;
  if (!configDir) {
    own = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-dockercfg-'));
    configDir = own;
    const auths: Record<string, { auth: string }> = {};
    if (opts.creds) auths[opts.creds.host] = { auth: Buffer.from(`${opts.creds.user}:${opts.creds.password}`).toString('base64') };
    fs.writeFileSync(path.join(configDir, 'config.json'), JSON.stringify({ auths }));
  }
  try {
    const args = ['manifest', 'inspect'];
    if (opts.insecure ?? true) args.push('--insecure');
    args.push(ref);
    return await run(DOCKER(), args, { ...opts, env: { ...process.env, ...opts.env, DOCKER_CONFIG: configDir } });
  } finally {
    if (own) fs.rmSync(own, { recursive: true, force: true });
  }
}
