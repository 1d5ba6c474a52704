/**
 * Request matching: which recorded exchange answers a live request. One small class, like talkback's.
 *
 * Key: method + path + query (parameter order ignored) + whether credentials were sent (never their
 * value: tokens change every run). For manifests, the request's Accept set must accept the recorded
 * response's media type, as a registry negotiates. User-Agent, Date, Connection, Accept-Encoding and
 * the rest never take part. Identical requests get the recorded answers in order, the last repeating.
 */
import { headerValue, headerValues } from '../fixture/model';
import { LoadedExchange } from '../fixture/files';
import { acceptSet, accepts, routeOf } from '../registry/routes';
import { bucketKey, hasCredentials, normalizeQuery, RequestView, requestIdentity, splitUrl } from '../fixture/identity';
import { normalizeRange } from '../http/range';

export interface Miss {
  request: string;
  nearest: Array<{ request: string; source: string; why: string }>;
}

export class Matcher {
  private buckets = new Map<string, LoadedExchange[]>();
  private counters = new Map<string, number>();
  /** Keyed by path only, for "nearest" suggestions on a miss. */
  private byPath = new Map<string, LoadedExchange[]>();
  private all: LoadedExchange[] = [];
  readonly unservable: LoadedExchange[] = [];
  private used = new Set<LoadedExchange>();

  constructor(exchanges: LoadedExchange[]) {
    for (const ex of exchanges) this.add(ex);
  }

  /** Adds an exchange (recorded while serving, with --record-missing). */
  add(ex: LoadedExchange): void {
    if (!ex.response) {
      this.unservable.push(ex);
      return;
    }
    this.all.push(ex);
    this.pools.clear();
    // An answer recorded N times in a row (`times`) takes N places in its sequence.
    const key = bucketKey(recordedView(ex));
    for (let i = 0; i < (ex.times ?? 1); i++) push(this.buckets, key, ex);
    push(this.byPath, splitUrl(ex.request.url).path, ex);
  }

  get size(): number {
    return this.all.length;
  }

  /** The exchange that answers this request, or undefined. HEAD falls back to a recorded GET. */
  match(req: RequestView): LoadedExchange | undefined {
    return this.matchInPlace(req).ex;
  }

  /**
   * The same, and whether the request came after the recorded sequence for it was used up (`repeat`:
   * the last recorded answer is repeated, unless what this run changed says otherwise; replayer.ts).
   */
  matchInPlace(req: RequestView): { ex?: LoadedExchange; repeat: boolean } {
    const hit = this.lookup(req, true);
    if (hit.ex || req.method.toUpperCase() !== 'HEAD') return hit;
    // A HEAD answered from a recorded GET does not use up that GET's place in a sequence.
    return this.lookup({ ...req, method: 'GET' }, false);
  }

  private lookup(req: RequestView, advance: boolean): { ex?: LoadedExchange; repeat: boolean } {
    const key = bucketKey(req);
    const bucket = this.buckets.get(key);
    if (!bucket) return { repeat: false };
    // = requestIdentity(req), without computing the route and the bucket key again
    let counterKey = key;
    const wanted = this.isManifestBucket(key, bucket) ? this.acceptOf(req) : undefined;
    if (wanted) counterKey = `${key} accept=${wanted.text}`;
    const range = normalizeRange(headerValue(req.headers, 'range'));
    if (range !== undefined) counterKey += ` range=${range}`;
    // The pool depends only on the bucket, the Accept set and the range: worked out once for each.
    let pool = this.pools.get(counterKey);
    if (pool === undefined) {
      pool = bucket;
      if (wanted) {
        // Recordings made with the very same Accept set are what the registry chose for it: they win.
        // Others only where the registry would have answered the same (registry/routes.ts accepts()).
        const accept = range === undefined ? counterKey : counterKey.slice(0, -` range=${range}`.length);
        const same = bucket.filter((ex) => this.identity(ex) === accept);
        const route = routeOf(splitUrl(req.url).path);
        const byDigest = route.kind === 'manifest' && route.reference.includes(':');
        pool = same.length ? same : bucket.filter((ex) => ex.response!.status >= 300 || accepts(wanted.set, this.contentType(ex), byDigest));
      }
      // A recorded partial answer (206, 416) answers only the very range it was recorded for; a full
      // answer answers any range (send.ts cuts it). Each range keeps its own place in the sequence.
      // Recordings of the very same range come first.
      const sameRange = range === undefined ? [] : pool.filter((ex) => isPartial(ex) && this.range(ex) === range);
      pool = sameRange.length ? sameRange : pool.filter((ex) => !isPartial(ex) || this.range(ex) === range);
      capSet(this.pools, counterKey, pool);
    }
    if (pool.length === 0) return { repeat: false };
    const n = this.counters.get(counterKey) ?? 0;
    if (advance) this.counters.set(counterKey, n + 1);
    const ex = pool[Math.min(n, pool.length - 1)];
    this.used.add(ex);
    return { ex, repeat: n >= pool.length };
  }


  private ranges = new WeakMap<LoadedExchange, string | undefined>();
  private range(ex: LoadedExchange): string | undefined {
    if (!this.ranges.has(ex)) this.ranges.set(ex, normalizeRange(headerValue(ex.request.headers, 'range')));
    return this.ranges.get(ex);
  }

  // Per request only what differs between requests: the pool for a bucket and an Accept set, and the
  // parsed Accept set of a header value, are computed once (bounded maps, cleared when exchanges are added).
  private pools = new Map<string, LoadedExchange[]>();
  private acceptSets = new Map<string, { set: string[]; text: string }>();
  private manifestBuckets = new Map<string, boolean>();
  private isManifestBucket(key: string, bucket: LoadedExchange[]): boolean {
    let m = this.manifestBuckets.get(key);
    if (m === undefined) capSet(this.manifestBuckets, key, (m = routeOf(splitUrl(bucket[0].request.url).path).kind === 'manifest'));
    return m;
  }
  private acceptOf(req: RequestView): { set: string[]; text: string } {
    const lines = headerValues(req.headers, 'accept');
    const raw = lines.length === 1 ? lines[0] : lines.join('\n');
    let a = this.acceptSets.get(raw);
    if (!a) {
      const set = acceptSet(lines);
      capSet(this.acceptSets, raw, (a = { set, text: set.join(',') }));
    }
    return a;
  }

  // What never changes for a recorded exchange: computed once, not on every request.
  private identities = new WeakMap<LoadedExchange, string>();
  private contentTypes = new WeakMap<LoadedExchange, string | undefined>();
  private identity(ex: LoadedExchange): string {
    let id = this.identities.get(ex);
    if (id === undefined) this.identities.set(ex, (id = requestIdentity(ex.request)));
    return id;
  }
  private contentType(ex: LoadedExchange): string | undefined {
    if (!this.contentTypes.has(ex)) this.contentTypes.set(ex, headerValue(ex.response!.headers, 'content-type'));
    return this.contentTypes.get(ex);
  }

  /** Fixtures no request has used so far. */
  unused(): LoadedExchange[] {
    return this.all.filter((ex) => !this.used.has(ex));
  }

  /** Why nothing matched: the nearest recorded requests, each with what differs. */
  explain(req: RequestView): Miss {
    const { path, query } = splitUrl(req.url);
    const kind = routeOf(path).kind;
    // Nearest first: the same path, then the same route kind (a tags request is not near a blob), then
    // the longest common path prefix. Each recorded request once, not once per sequence copy.
    const scored = this.all
      .map((ex) => {
        const p = splitUrl(ex.request.url).path;
        return { ex, score: [p === path ? 1 : 0, routeOf(p).kind === kind ? 1 : 0, commonPrefix(p, path)] };
      })
      .sort((a, b) => b.score[0] - a.score[0] || b.score[1] - a.score[1] || b.score[2] - a.score[2]);
    const seen = new Set<string>();
    const nearest: Miss['nearest'] = [];
    for (const { ex } of scored) {
      const key = `${ex.request.method} ${ex.request.url} ${acceptSet(headerValues(ex.request.headers, 'accept')).join(',')} ${hasCredentials(ex.request.headers)}`;
      if (seen.has(key)) continue;
      seen.add(key);
      nearest.push({ request: `${ex.request.method} ${ex.request.url}`, source: ex.source ? `${ex.source.file}:${ex.source.line}` : '?', why: difference(req, ex, path, query) });
      if (nearest.length === 3) break;
    }
    return { request: `${req.method} ${req.url}`, nearest };
  }
}

/** A recorded request as the matcher sees it (a token POST's form comes from its body). */
function recordedView(ex: LoadedExchange): RequestView {
  const b = ex.request.body;
  return b.kind === 'inline' ? { ...ex.request, form: b.text } : ex.request;
}

function difference(req: RequestView, ex: LoadedExchange, path: string, query: string): string {
  const rec = splitUrl(ex.request.url);
  const diffs: string[] = [];
  if (req.method.toUpperCase() !== ex.request.method && !(req.method.toUpperCase() === 'HEAD' && ex.request.method === 'GET')) diffs.push(`method (recorded ${ex.request.method}, sent ${req.method.toUpperCase()})`);
  if (rec.path !== path) diffs.push('path');
  if (normalizeQuery(rec.query) !== normalizeQuery(query)) diffs.push(`query (recorded ${rec.query ? '?' + rec.query : 'none'}, sent ${query ? '?' + query : 'none'})`);
  const recAuth = hasCredentials(ex.request.headers);
  if (recAuth !== hasCredentials(req.headers)) diffs.push(recAuth ? 'credentials (recorded with Authorization)' : 'credentials (recorded without Authorization)');
  const route = routeOf(path);
  if (route.kind === 'manifest' && ex.response) {
    const ct = headerValue(ex.response.headers, 'content-type');
    const wanted = acceptSet(headerValues(req.headers, 'accept'));
    const same = wanted.join(',') === acceptSet(headerValues(ex.request.headers, 'accept')).join(',');
    if (!same && !accepts(wanted, ct, route.reference.includes(':'))) diffs.push(`Accept (sent ${wanted.length ? wanted.join(', ') : 'none'}; the recorded manifest is ${ct}, not among them)`);
  }
  const recRange = headerValue(ex.request.headers, 'range');
  if (isPartial(ex) && normalizeRange(recRange) !== normalizeRange(headerValue(req.headers, 'range'))) {
    diffs.push(`Range (recorded ${recRange ? `for ${recRange}` : 'without one'}, answered ${ex.response!.status})`);
  }
  if (diffs.length === 0) return 'same request';
  return diffs.join(', ') + (diffs.length === 1 ? ' differs' : ' differ');
}

/** A recorded answer that holds part of a body (or says the range was unsatisfiable). */
function isPartial(ex: LoadedExchange): boolean {
  const status = ex.response?.status;
  return status === 206 || status === 416;
}

function commonPrefix(a: string, b: string): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/** Caches per distinct request value stay small whatever the traffic: past the cap they start over. */
const CACHE_CAP = 1024;
function capSet<K, V>(m: Map<K, V>, k: K, v: V): void {
  if (m.size >= CACHE_CAP) m.clear();
  m.set(k, v);
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const l = m.get(k);
  if (l) l.push(v);
  else m.set(k, [v]);
}
