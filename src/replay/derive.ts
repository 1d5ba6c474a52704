/**
 * Answers derived from what was recorded, as a registry holding that content would give them:
 * a manifest recorded by tag is also served by digest (and a tag resolved by a recorded HEAD is
 * served from the manifest recorded by digest); any blob in the store is served by digest; tag lists
 * and the catalog are paginated (`n`, `last`, `Link`) from the recorded lists.
 *
 * Only what the registry itself would answer (docs/fixture-format.md, "What replay derives"): a
 * manifest only where the request's Accept gets it from the registry (registry/routes.ts accepts()),
 * an OCI manifest it does not accept is distribution's 404; after a replayed DELETE of a blob or a
 * manifest (state.ts), its 404. A token request with no recording gets the placeholder token.
 */
import { LoadedExchange } from '../fixture/files';
import { Body, bodyDigest, Exchange, HeaderList, headerValue, headerValues } from '../fixture/model';
import { BodyStore } from '../fixture/store';
import { acceptSet, accepts, OCI_INDEX, OCI_MANIFEST, Route } from '../registry/routes';
import { challengeTokenPath, REPLAY_EXPIRES_IN, REPLAY_TOKEN } from '../registry/auth';
import { RunState } from './state';
import { RequestView, splitUrl } from '../fixture/identity';
import { routeOf } from '../registry/routes';

/** Routes a registry with auth protects (the ping answers the challenge itself; token and redirect URLs are regtape's). */
const PROTECTED = new Set<Route['kind']>(['manifest', 'blob', 'tags', 'catalog', 'referrers']);
const API_VERSION: [string, string] = ['Docker-Distribution-Api-Version', 'registry/2.0'];

export class RegistryView {
  /** `repo@digest` -> the recorded GET that returned that manifest's bytes. */
  private manifests = new Map<string, LoadedExchange>();
  /** `repo:tag` -> digests the tag resolved to (several when recorded with different Accept sets). */
  private tags = new Map<string, Set<string>>();
  /** Any stored body, by digest: a blob can be served from it. */
  private bodies = new Map<string, LoadedExchange>();
  private tagLists = new Map<string, Set<string>>();
  private catalog?: Set<string>;
  /** A recorded 401 Bearer/Basic challenge to an anonymous request: the registry wants credentials. */
  private challenge?: LoadedExchange;
  /** Derived inline answers reference no stored body; any store will do. */
  private readonly store: BodyStore;
  /** Token endpoint paths the recorded challenges named: only these hand out placeholder tokens. */
  private readonly realms = new Set<string>();

  constructor(
    exchanges: LoadedExchange[],
    private readonly state: RunState,
    /** Hand out placeholder tokens where none was recorded (not with --record-missing: those get recorded). */
    private readonly placeholderTokens = true,
  ) {
    this.store = exchanges[0]?.store ?? new BodyStore(process.cwd());
    for (const ex of exchanges) this.add(ex);
  }

  /** The recorded Bearer challenge header, if the registry had one. */
  challengeHeader(): string | undefined {
    return this.challenge ? headerValue(this.challenge.response!.headers, 'www-authenticate') : undefined;
  }

  add(ex: LoadedExchange): void {
    const res = ex.response;
    for (const v of res ? headerValues(res.headers, 'www-authenticate') : []) {
      const p = challengeTokenPath(v);
      if (p) this.realms.add(p);
    }
    if (res?.status === 401 && !this.challenge && headerValue(res.headers, 'www-authenticate') && !headerValue(ex.request.headers, 'authorization')) {
      this.challenge = ex;
    }
    if (!res || res.status !== 200) return;
    const { path } = splitUrl(ex.request.url);
    const route = routeOf(path);
    if (res.body.kind === 'stored' && !this.bodies.has(res.body.digest)) this.bodies.set(res.body.digest, ex);
    if (route.kind === 'manifest' && (ex.request.method === 'GET' || ex.request.method === 'HEAD')) {
      const digest = headerValue(res.headers, 'docker-content-digest') ?? bodyDigest(res.body);
      if (!digest) return;
      if (res.body.kind !== 'none') this.manifests.set(`${route.name}@${digest}`, ex);
      if (!route.reference.includes(':')) add(this.tags, `${route.name}:${route.reference}`, digest);
    } else if (route.kind === 'tags' && res.body.kind === 'inline') {
      const parsed = parseJson(res.body.text) as { tags?: unknown } | undefined;
      if (Array.isArray(parsed?.tags)) for (const t of parsed!.tags) if (typeof t === 'string') add(this.tagLists, route.name, t);
    } else if (route.kind === 'catalog' && res.body.kind === 'inline') {
      const parsed = parseJson(res.body.text) as { repositories?: unknown } | undefined;
      if (Array.isArray(parsed?.repositories)) {
        this.catalog ??= new Set();
        for (const r of parsed!.repositories) if (typeof r === 'string') this.catalog.add(r);
      }
    }
  }

  /** A derived answer for a request no fixture matched, or undefined. */
  answer(req: RequestView, route: Route): LoadedExchange | undefined {
    const method = req.method.toUpperCase();
    // regtape's own token endpoint (a realm replay pointed at itself): a placeholder token, as recorded ones are served.
    // Only at a realm a recorded challenge named: any other path under /__regtape/token/ is unmatched.
    if (route.kind === 'token') {
      const named = this.realms.has(splitUrl(req.url).path);
      return this.placeholderTokens && named && (method === 'GET' || method === 'POST') ? this.token() : undefined;
    }
    if (method !== 'GET' && method !== 'HEAD') return undefined;
    // A registry that challenged anonymous requests when recorded challenges them now as well,
    // so a client never gets in without the token dance it would have to do live.
    if (this.challenge && !headerValue(req.headers, 'authorization') && PROTECTED.has(route.kind)) {
      return this.challengeFor(route);
    }
    switch (route.kind) {
      case 'manifest':
        return this.manifest(req, route.name, route.reference);
      case 'blob':
        return this.deleted(route) ?? this.blob(route.digest);
      case 'tags':
        return this.list(req, `/v2/${route.name}/tags/list`, this.tagLists.get(route.name), (items) => ({ name: route.name, tags: items }));
      case 'catalog':
        return this.list(req, '/v2/_catalog', this.catalog, (items) => ({ repositories: items }));
      default:
        return undefined;
    }
  }

  /** The recorded challenge, with the scope a registry adds for a repository (as distribution does). */
  private challengeFor(route: Route): LoadedExchange {
    const rec = this.challenge!;
    const name = 'name' in route ? route.name : undefined;
    const headers: HeaderList = rec.response!.headers
      .filter(([n]) => n.toLowerCase() !== 'content-length')
      .map(([n, v]) => {
        if (n.toLowerCase() !== 'www-authenticate' || !name || !/^\s*bearer\b/i.test(v) || /\bscope=/.test(v)) return [n, v];
        return [n, `${v},scope="repository:${name}:pull"`];
      });
    return { ...rec, response: { ...rec.response!, headers } };
  }

  private manifest(req: RequestView, repo: string, reference: string): LoadedExchange | undefined {
    const wanted = acceptSet(headerValues(req.headers, 'accept'));
    const byDigest = reference.includes(':');
    const known = byDigest ? [reference] : [...(this.tags.get(`${repo}:${reference}`) ?? [])];
    const digests = known.filter((d) => !this.state.manifestDeleted(repo, d));
    if (known.length && !digests.length) return this.deleted({ kind: 'manifest', name: repo, reference });
    let refusedOci: string | undefined;
    for (const d of digests) {
      const ex = this.manifests.get(`${repo}@${d}`);
      const type = ex && headerValue(ex.response!.headers, 'content-type');
      if (ex && accepts(wanted, type, byDigest)) return ex;
      const t = type?.split(';')[0].trim().toLowerCase();
      if (t === OCI_MANIFEST || t === OCI_INDEX) refusedOci = t;
    }
    // What distribution says when it holds an OCI manifest the request does not accept.
    if (refusedOci === OCI_MANIFEST) return this.error(404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'OCI manifest found, but accept header does not support OCI manifests' }] });
    if (refusedOci === OCI_INDEX) return this.error(404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'OCI index found, but accept header does not support OCI indexes' }] });
    return undefined;
  }

  /**
   * The registry's 404 for a blob or manifest a replayed DELETE removed in this run (a deleted
   * manifest takes the tags that pointed at it along, as distribution untags them); else undefined.
   */
  deleted(route: Route): LoadedExchange | undefined {
    if (route.kind === 'blob' && this.state.blobDeleted(route.name, route.digest)) {
      return this.error(404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'blob unknown to registry', detail: route.digest }] });
    }
    if (route.kind !== 'manifest') return undefined;
    const { name, reference } = route;
    const byDigest = reference.includes(':');
    const known = byDigest ? [reference] : [...(this.tags.get(`${name}:${reference}`) ?? [])];
    if (!known.length || !known.every((d) => this.state.manifestDeleted(name, d))) return undefined;
    const detail = byDigest ? { Name: name, Revision: reference } : { Tag: reference };
    return this.error(404, { errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown', detail }] });
  }

  /** A registry error as distribution writes it (JSON and a newline). */
  private error(status: number, body: unknown): LoadedExchange {
    const text = JSON.stringify(body) + '\n';
    return synthetic(this.store, undefined, [['Content-Type', 'application/json; charset=utf-8'], API_VERSION], { kind: 'inline', text }, status);
  }

  /** The placeholder token regtape's own token endpoint hands out (send.ts dates it when served). */
  private token(): LoadedExchange {
    const text = JSON.stringify({ token: REPLAY_TOKEN, access_token: REPLAY_TOKEN, expires_in: REPLAY_EXPIRES_IN, issued_at: new Date(0).toISOString() });
    return synthetic(this.store, undefined, [['Content-Type', 'application/json']], { kind: 'inline', text });
  }

  private blob(digest: string): LoadedExchange | undefined {
    const source = this.bodies.get(digest);
    if (!source || source.response!.body.kind !== 'stored') return undefined;
    const body = source.response!.body;
    return synthetic(source.store, source.source, [
      ['Accept-Ranges', 'bytes'],
      ['Content-Type', 'application/octet-stream'],
      ['Docker-Content-Digest', digest],
      ['Etag', `"${digest}"`],
      API_VERSION,
    ], body);
  }

  private list(req: RequestView, path: string, items: Set<string> | undefined, shape: (items: string[]) => unknown): LoadedExchange | undefined {
    if (!items) return undefined;
    const q = new URLSearchParams(splitUrl(req.url).query);
    const all = [...items].sort();
    const last = q.get('last');
    let rest = last ? all.filter((t) => t > last) : all;
    const nParam = q.get('n');
    const headers: HeaderList = [['Content-Type', 'application/json; charset=utf-8'], API_VERSION];
    if (nParam !== null && /^\d+$/.test(nParam)) {
      const n = Number(nParam);
      if (rest.length > n && n > 0) {
        headers.push(['Link', `<${path}?last=${encodeURIComponent(rest[n - 1])}&n=${n}>; rel="next"`]);
      }
      rest = rest.slice(0, n);
    }
    const text = JSON.stringify(shape(rest)) + '\n';
    return synthetic(this.store, undefined, headers, { kind: 'inline', text });
  }
}

function synthetic(store: BodyStore, from: Exchange['source'], headers: HeaderList, body: Body, status = 200): LoadedExchange {
  return {
    request: { method: 'GET', url: '(derived)', headers: [], body: { kind: 'none' } },
    response: { status, headers, body },
    source: from ? { ...from } : { file: '(derived)', line: 0 },
    store,
  };
}

function add(m: Map<string, Set<string>>, k: string, v: string): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
