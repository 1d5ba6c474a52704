/**
 * `verify`: checks a fixture folder without serving it. Every fixture is parsed (a broken one is a
 * problem, and the others are still checked), every stored body is hashed once, every manifest's
 * digest and length are checked against its bytes, and every blob and child manifest a recorded
 * manifest references must be in the recording, so that a pull works offline.
 *
 * Also the shared reading and indexing that `ls` uses.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { listFixtureFiles, LoadedExchange, parseFixture, storeCache, storedBodyRefs, storeFor } from '../fixture/files';
import { Body, bodyDigest, bodySize, FixtureError, headerValue, ORIGIN_PLACEHOLDER } from '../fixture/model';
import { BodyStore } from '../fixture/store';
import { isRedirect, REDIRECT_PREFIX } from '../registry/redirect';
import { Route, routeOf } from '../registry/routes';
import { splitUrl } from '../fixture/identity';

export interface Problem {
  /** The fixture file (relative to the working directory, as replay names it). */
  file: string;
  /** 1-based line of the exchange (or of the parse error). */
  line: number;
  /** parse | body-missing | body-size | body-sha256 | manifest-digest | content-length | blob-digest | incomplete */
  kind: string;
  message: string;
}

export interface VerifyReport {
  /** Fixture files found (documentation files without a `## in` section are not counted). */
  files: number;
  /** Exchanges read from the fixtures that could be parsed. */
  exchanges: number;
  /** Distinct stored bodies checked. */
  bodies: number;
  /** Ordered by file, then line. */
  problems: Problem[];
  /** Not problems: requests recorded without a response (never served). */
  notes: string[];
}

// ---------------------------------------------------------------------------------------------
// Reading a folder, tolerantly.

/** Fixtures read for inspection: unlike loadFixtures, a file that cannot be parsed is reported, not thrown. */
export interface Inspected {
  /** Fixture files (cwd-relative), in load order, parsed or not. */
  files: string[];
  /** Exchanges of the files that parsed, in load order, each with its body store. */
  exchanges: LoadedExchange[];
  /** Files that could not be read or parsed. */
  unreadable: Problem[];
  /** Markdown/text files without a `## in` section: documentation. */
  notFixtures: string[];
}


export interface InspectOptions {
  /** The body store when it is outside the fixture folders (`--store DIR`). */
  store?: string;
}

/** Reads every fixture under the paths. Throws FixturePathError only for a path that does not exist. */
export async function readForInspection(paths: string[], opts: InspectOptions = {}): Promise<Inspected> {
  const found = await listFixtureFiles(paths);
  const out: Inspected = { files: [], exchanges: [], unreadable: [], notFixtures: [] };
  const cache = storeCache(opts.store);
  const BATCH = 32;
  for (let i = 0; i < found.length; i += BATCH) {
    const slice = found.slice(i, i + BATCH);
    const texts = await Promise.all(slice.map(({ file }) => fsp.readFile(file, 'utf8').catch((e: Error) => e)));
    for (let j = 0; j < slice.length; j++) {
      const { file, root } = slice[j];
      const rel = path.relative(process.cwd(), file) || file;
      const text = texts[j];
      if (text instanceof Error) {
        out.files.push(rel);
        out.unreadable.push({ file: rel, line: 1, kind: 'parse', message: `cannot read: ${text.message}` });
        continue;
      }
      let parsed;
      try {
        parsed = parseFixture(text, rel);
      } catch (e) {
        out.files.push(rel);
        if (e instanceof FixtureError) out.unreadable.push({ file: e.file, line: e.line, kind: 'parse', message: e.problem });
        else out.unreadable.push({ file: rel, line: 1, kind: 'parse', message: (e as Error).message });
        continue;
      }
      if (!parsed) {
        out.notFixtures.push(rel);
        continue;
      }
      out.files.push(rel);
      const store = await storeFor(file, root, cache);
      for (const ex of parsed) out.exchanges.push({ ...ex, store });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// What a recording holds, by repository.

export const sha256Hex = (data: string | Buffer): string => 'sha256:' + createHash('sha256').update(data).digest('hex');

/** The digest of a body as the recording names it: the store's digest, or the hash of inline text. */
export function where(ex: LoadedExchange): { file: string; line: number } {
  return ex.source ?? { file: '?', line: 1 };
}

export interface ManifestEntry {
  ex: LoadedExchange;
  repo: string;
  /** The tag or digest it was requested by. */
  reference: string;
  /** sha256 of the recorded body (for a stored body: its name in the store). */
  digest: string;
  mediaType?: string;
  size: number;
}

export interface TagEntry {
  repo: string;
  tag: string;
  digest: string;
  mediaType?: string;
}

export interface BlobSource {
  /** The exchange whose 200 body holds the blob (the blob GET itself, or a redirect's follow-up). */
  ex: LoadedExchange;
  body: Body;
}

/** A child of a recorded manifest: a config or layer blob, or a manifest listed in an index. */
export interface Reference {
  kind: 'config' | 'layer' | 'manifest';
  digest: string;
  size?: number;
  platform?: string;
}

export class RecordingIndex {
  readonly routes = new Map<LoadedExchange, Route>();
  /** GET 200 manifests with a body, in load order. */
  readonly manifests: ManifestEntry[] = [];
  /** `repo@digest` -> manifests with those bytes. */
  readonly manifestsByKey = new Map<string, ManifestEntry[]>();
  /** Tags resolved by a recorded GET or HEAD (one entry per tag, digest and media type). */
  readonly tags: TagEntry[] = [];
  /** Repository -> digest -> where its bytes are: a blob GET answered 200, directly or through redirects. */
  readonly repoBlobs = new Map<string, Map<string, BlobSource>>();
  /** Repository -> digest -> size, for blobs a HEAD answered (bytes not recorded). */
  readonly repoHeads = new Map<string, Map<string, number | undefined>>();
  /** Digest -> a 200 exchange with that stored body (replay serves any of these by digest). */
  readonly storedBodies = new Map<string, LoadedExchange>();
  /** Repository -> exchanges about it (including redirect follow-ups of its blobs). */
  readonly repoExchanges = new Map<string, Set<LoadedExchange>>();

  constructor(readonly exchanges: LoadedExchange[]) {
    const byPath = new Map<string, LoadedExchange[]>();
    for (const ex of exchanges) {
      const route = routeOf(splitUrl(ex.request.url).path);
      this.routes.set(ex, route);
      if ('name' in route) addTo(this.repoExchanges, route.name, ex);
      const res = ex.response;
      if (!res) continue;
      if (ex.request.method === 'GET') push(byPath, splitUrl(ex.request.url).path, ex);
      if (res.status === 200 && res.body.kind === 'stored' && !this.storedBodies.has(bodyDigest(res.body)!)) this.storedBodies.set(bodyDigest(res.body)!, ex);
    }
    for (const ex of exchanges) {
      const route = this.routes.get(ex)!;
      const res = ex.response;
      if (!res) continue;
      const method = ex.request.method;
      if (route.kind === 'manifest' && (method === 'GET' || method === 'HEAD') && res.status === 200) {
        const mediaType = headerValue(res.headers, 'content-type')?.split(';')[0].trim();
        const digest = res.body.kind !== 'none' ? bodyDigest(res.body)! : headerValue(res.headers, 'docker-content-digest');
        if (res.body.kind !== 'none' && method === 'GET') {
          const entry: ManifestEntry = { ex, repo: route.name, reference: route.reference, digest: digest!, mediaType, size: bodySize(res.body) };
          this.manifests.push(entry);
          push(this.manifestsByKey, `${route.name}@${digest}`, entry);
        }
        if (digest && !isDigest(route.reference) && !this.tags.some((t) => t.repo === route.name && t.tag === route.reference && t.digest === digest && t.mediaType === mediaType)) {
          this.tags.push({ repo: route.name, tag: route.reference, digest, mediaType });
        }
      } else if (route.kind === 'blob' && (method === 'GET' || method === 'HEAD')) {
        if (method === 'HEAD') {
          if (res.status === 200) {
            const len = headerValue(res.headers, 'content-length');
            let m = this.repoHeads.get(route.name);
            if (!m) this.repoHeads.set(route.name, (m = new Map()));
            m.set(route.digest, len !== undefined && /^\d+$/.test(len) ? Number(len) : undefined);
          }
          continue;
        }
        const end = this.follow(ex, byPath, route.name);
        if (!end || end.response!.body.kind === 'none' || bodyDigest(end.response!.body) !== route.digest) continue;
        let m = this.repoBlobs.get(route.name);
        if (!m) this.repoBlobs.set(route.name, (m = new Map()));
        if (!m.has(route.digest)) m.set(route.digest, { ex: end, body: end.response!.body });
      }
    }
  }

  /** The 200 at the end of a blob GET's redirect chain (the GET itself if it answered 200). */
  private follow(ex: LoadedExchange, byPath: Map<string, LoadedExchange[]>, repo: string): LoadedExchange | undefined {
    let cur = ex;
    for (let hops = 0; hops < 10; hops++) {
      const res = cur.response!;
      if (res.status === 200) return cur;
      if (!isRedirect(res.status)) return undefined;
      const loc = headerValue(res.headers, 'location');
      if (!loc) return undefined;
      let u: URL;
      try {
        u = new URL(loc, ORIGIN_PLACEHOLDER + splitUrl(cur.request.url).path);
      } catch {
        return undefined;
      }
      if (u.origin !== ORIGIN_PLACEHOLDER) return undefined; // a redirect that left the proxy: not replayable
      const candidates = byPath.get(u.pathname) ?? byPath.get(decodeURIComponent(u.pathname)) ?? [];
      const next = candidates.find((c) => c.response!.status === 200) ?? candidates.find((c) => isRedirect(c.response!.status));
      if (!next) return undefined;
      if (u.pathname.startsWith(REDIRECT_PREFIX)) addTo(this.repoExchanges, repo, next);
      cur = next;
    }
    return undefined;
  }

  /** Whether a pull of that blob from that repository would be answered with its bytes by replay. */
  blobAvailable(repo: string, digest: string): boolean {
    return this.repoBlobs.get(repo)?.has(digest) === true || this.storedBodies.has(digest);
  }

  manifestAvailable(repo: string, digest: string): boolean {
    return this.manifestsByKey.has(`${repo}@${digest}`);
  }

  /** Tags a manifest digest was recorded under, in that repository. */
  tagsOf(repo: string, digest: string): string[] {
    return this.tags.filter((t) => t.repo === repo && t.digest === digest).map((t) => t.tag);
  }

  repositories(): string[] {
    return [...this.repoExchanges.keys()].sort();
  }
}

/** The blobs and child manifests a manifest references (undefined if it is not JSON of a known shape). */
export function referencesOf(text: string): Reference[] | undefined {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObj(m)) return undefined;
  const refs: Reference[] = [];
  const size = (d: Record<string, unknown>): number | undefined => (typeof d.size === 'number' ? d.size : undefined);
  if (Array.isArray(m.manifests)) {
    for (const d of m.manifests) {
      if (!isObj(d) || typeof d.digest !== 'string') continue;
      // Attestations (buildkit provenance, SBOMs) are listed in Hub indexes but no client pulls them.
      if (isObj(d.annotations) && d.annotations['vnd.docker.reference.type'] === 'attestation-manifest') continue;
      const p = isObj(d.platform) ? [d.platform.os, d.platform.architecture, d.platform.variant].filter((x) => typeof x === 'string').join('/') : undefined;
      refs.push({ kind: 'manifest', digest: d.digest, size: size(d), ...(p ? { platform: p } : {}) });
    }
    return refs;
  }
  if (isObj(m.config) && typeof m.config.digest === 'string') refs.push({ kind: 'config', digest: m.config.digest, size: size(m.config) });
  if (Array.isArray(m.layers)) {
    for (const d of m.layers) {
      // Foreign / non-distributable layers are fetched from their `urls`, not from the registry.
      if (isObj(d) && typeof d.digest === 'string' && !(Array.isArray(d.urls) && d.urls.length)) refs.push({ kind: 'layer', digest: d.digest, size: size(d) });
    }
  }
  if (Array.isArray(m.fsLayers)) {
    // schema 1
    for (const d of m.fsLayers) if (isObj(d) && typeof d.blobSum === 'string') refs.push({ kind: 'layer', digest: d.blobSum });
  }
  return refs;
}

/** A manifest's text: inline, or read from the store (manifests are at most a few MiB). */
export async function manifestText(body: Body, store: BodyStore): Promise<string | undefined> {
  if (body.kind === 'inline') return body.text;
  if (body.kind !== 'stored' || body.size > 4 * 1024 * 1024) return undefined;
  try {
    return await fsp.readFile(store.pathFor(body.digest), 'utf8');
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// verify

interface StoredBodyCheck {
  digest: string;
  refs: Array<{ ex: LoadedExchange; size: number }>;
  actualSize?: number;
  actualDigest?: string;
}

async function hashFile(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return 'sha256:' + h.digest('hex');
}

export function plural(n: number, one: string, many = one + 's'): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Checks every fixture under the paths. Throws FixturePathError only for a path that does not exist. */
export async function verify(paths: string[], opts: InspectOptions = {}): Promise<VerifyReport> {
  const read = await readForInspection(paths, opts);
  const problems: Problem[] = [...read.unreadable];
  const notes: string[] = [];
  const problem = (ex: LoadedExchange, kind: string, message: string): void => {
    problems.push({ ...where(ex), kind, message });
  };

  for (const ex of read.exchanges) {
    if (!ex.response) {
      const w = where(ex);
      notes.push(`${w.file}:${w.line}: ${ex.request.method} ${ex.request.url} was recorded without a response: loaded, never served`);
    }
  }

  // 1. Stored bodies: each distinct one stat'ed and hashed once.
  const refs = storedBodyRefs(read.exchanges);
  for (const { ex, message } of refs.invalid) problem(ex, 'body-missing', message);
  const bodies = new Map<string, StoredBodyCheck>();
  for (const [p, c] of refs.bodies) bodies.set(p, { digest: c.digest, refs: c.refs });
  for (const [p, c] of bodies) {
    const rel = path.relative(process.cwd(), p) || p;
    const also = (n: number): string => (n > 1 ? ` (referenced by ${plural(n, 'exchange')})` : '');
    const st = await fsp.stat(p).catch(() => undefined);
    if (!st || !st.isFile()) {
      problem(c.refs[0].ex, 'body-missing', `body ${c.digest} is missing from the body store (${rel})${also(c.refs.length)}: re-record, or copy the bodies/ folder along with the fixtures (recorded with --store DIR? pass the same --store)`);
      continue;
    }
    c.actualSize = st.size;
    const wrongSizes = new Map<number, Array<{ ex: LoadedExchange }>>();
    for (const r of c.refs) if (r.size !== st.size) push(wrongSizes, r.size, r);
    for (const [size, refs] of wrongSizes) {
      problem(refs[0].ex, 'body-size', `body ${c.digest} (${rel}) has ${st.size} bytes, the fixture says ${size}${also(refs.length)}: the store is damaged or was truncated; re-record it`);
    }
    try {
      c.actualDigest = await hashFile(p);
    } catch (e) {
      problem(c.refs[0].ex, 'body-missing', `body ${c.digest} (${rel}) cannot be read: ${(e as Error).message}`);
      continue;
    }
    if (c.actualDigest !== c.digest && wrongSizes.size === 0) {
      problem(c.refs[0].ex, 'body-sha256', `body ${c.digest} (${rel}): sha256 mismatch, its bytes hash to ${c.actualDigest}${also(c.refs.length)}: the stored body was altered; re-record it`);
    }
  }
  /** The sha256 of a body's actual bytes (undefined when a stored body could not be read). */
  const actualDigest = (ex: LoadedExchange, body: Body): string | undefined => {
    if (body.kind === 'inline') return bodyDigest(body);
    if (body.kind !== 'stored') return undefined;
    try {
      return bodies.get(ex.store.pathFor(body.digest))?.actualDigest;
    } catch {
      return undefined;
    }
  };

  // 2. Manifests (and blobs) answered 200: digest and length headers against the bytes.
  const index = new RecordingIndex(read.exchanges);
  for (const ex of read.exchanges) {
    const res = ex.response;
    const route = index.routes.get(ex)!;
    if (!res || res.status !== 200 || res.body.kind === 'none' || (route.kind !== 'manifest' && route.kind !== 'blob')) continue;
    const size = bodySize(res.body);
    const actual = actualDigest(ex, res.body);
    const len = headerValue(res.headers, 'content-length');
    if (len !== undefined && len.trim() !== String(size)) {
      problem(ex, 'content-length', `Content-Length ${len} but the body has ${size} bytes`);
    }
    if (!actual) continue;
    if (route.kind === 'manifest') {
      const dcd = headerValue(res.headers, 'docker-content-digest')?.trim();
      if (dcd !== undefined && dcd !== actual) {
        problem(ex, 'manifest-digest', `Docker-Content-Digest ${dcd} of ${route.name}:${route.reference} does not match the manifest, whose bytes hash to ${actual}: a client would reject it`);
      } else if (isDigest(route.reference) && route.reference.startsWith('sha256:') && route.reference !== actual) {
        problem(ex, 'manifest-digest', `manifest requested by digest ${route.reference} has bytes that hash to ${actual}: a client would reject it`);
      }
    } else if (route.digest.startsWith('sha256:') && route.digest !== actual && ex.request.method === 'GET') {
      // (a stored body whose bytes do not match its name is reported above)
      if (res.body.kind !== 'stored' || bodyDigest(res.body) !== route.digest) {
        problem(ex, 'blob-digest', `blob ${route.digest} of ${route.name} is answered with bytes that hash to ${actual}`);
      }
    }
  }

  // 3. Completeness: every blob and child manifest of a recorded manifest is in the recording.
  const done = new Set<string>();
  for (const m of index.manifests) {
    const key = `${m.repo}@${m.digest}`;
    if (done.has(key)) continue;
    done.add(key);
    const text = await manifestText(m.ex.response!.body, m.ex.store);
    const refs = text === undefined ? undefined : referencesOf(text);
    if (!refs) continue;
    const tags = index.tagsOf(m.repo, m.digest);
    const name = tags.length ? `${m.repo}:${tags[0]}` : `${m.repo}@${m.digest}`;
    const seen = new Set<string>();
    for (const r of refs) {
      if (seen.has(r.kind + r.digest)) continue;
      seen.add(r.kind + r.digest);
      if (r.kind === 'manifest') {
        if (!index.manifestAvailable(m.repo, r.digest)) {
          problem(m.ex, 'incomplete', `manifest ${r.digest}${r.platform ? ` (${r.platform})` : ''} listed in ${name} is not in the recording: a pull of that platform would fail offline`);
        }
      } else if (!index.blobAvailable(m.repo, r.digest)) {
        problem(m.ex, 'incomplete', `${r.kind} ${r.digest} of ${name} is not in the recording: a pull would fail offline`);
      }
    }
  }

  problems.sort((a, b) => cmp(a.file, b.file) || a.line - b.line || cmp(a.kind, b.kind) || cmp(a.message, b.message));
  return { files: read.files.length, exchanges: read.exchanges.length, bodies: bodies.size, problems, notes };
}

/** One line per problem (`file:line: kind: message`), notes, then a summary line. */
export function formatReport(r: VerifyReport): string {
  const lines = r.problems.map((p) => `${p.file}:${p.line}: ${p.kind}: ${p.message}`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  lines.push(`verified ${plural(r.files, 'fixture')} (${plural(r.exchanges, 'exchange')}, ${plural(r.bodies, 'body', 'bodies')}): ${plural(r.problems.length, 'problem')}`);
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------

function isDigest(reference: string): boolean {
  return /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(reference);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const l = m.get(k);
  if (l) l.push(v);
  else m.set(k, [v]);
}

function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (s) s.add(v);
  else m.set(k, new Set([v]));
}
