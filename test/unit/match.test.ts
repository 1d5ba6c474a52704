import { Matcher } from '../../src/replay/match';
import { normalizeQuery } from '../../src/fixture/identity';
import { LoadedExchange } from '../../src/fixture/files';
import { BodyStore } from '../../src/fixture/store';
import { HeaderList } from '../../src/fixture/model';

const store = new BodyStore('/nonexistent');
let n = 0;
function ex(method: string, url: string, reqHeaders: HeaderList, status: number, resHeaders: HeaderList = [], text = ''): LoadedExchange {
  n++;
  return {
    request: { method, url, headers: reqHeaders, body: { kind: 'none' } },
    response: { status, headers: resHeaders, body: { kind: 'inline', text: text || `#${n}` } },
    source: { file: `f${n}.md`, line: 1 },
    store,
  };
}
const body = (e: LoadedExchange | undefined): string => (e?.response?.body as { text: string }).text;

const OCI = 'application/vnd.oci.image.manifest.v1+json';
const DOCKER = 'application/vnd.docker.distribution.manifest.v2+json';
const INDEX = 'application/vnd.oci.image.index.v1+json';

describe('Matcher', () => {
  it('ignores query parameter order', () => {
    expect(normalizeQuery('b=2&a=1&a=0')).toBe(normalizeQuery('a=0&a=1&b=2'));
    const m = new Matcher([ex('GET', '/v2/r/tags/list?n=10&last=a', [], 200, [], 'tags')]);
    expect(body(m.match({ method: 'GET', url: '/v2/r/tags/list?last=a&n=10', headers: [] }))).toBe('tags');
    expect(m.match({ method: 'GET', url: '/v2/r/tags/list?last=b&n=10', headers: [] })).toBeUndefined();
  });

  it('negotiates manifests on the Accept set, whatever the order or line split', () => {
    const m = new Matcher([ex('GET', '/v2/r/manifests/v1', [['accept', OCI]], 200, [['content-type', OCI]], 'oci')]);
    // docker: several lines, random order; containerd: one comma-joined line with parameters
    expect(body(m.match({ method: 'GET', url: '/v2/r/manifests/v1', headers: [['accept', INDEX], ['accept', OCI]] }))).toBe('oci');
    expect(body(m.match({ method: 'GET', url: '/v2/r/manifests/v1', headers: [['accept', `${DOCKER}, ${OCI};q=0.9, */*`]] }))).toBe('oci');
    // a client that does not accept the stored type gets nothing, as from a registry
    expect(m.match({ method: 'GET', url: '/v2/r/manifests/v1', headers: [['accept', DOCKER]] })).toBeUndefined();
  });

  it('negotiates as distribution 2.8 does: OCI only to its own type, Docker schema2 by digest to anything', () => {
    const m = new Matcher([
      ex('GET', '/v2/r/manifests/v1', [['accept', OCI]], 200, [['content-type', OCI]], 'oci'),
      ex('GET', '/v2/d/manifests/v1', [['accept', DOCKER]], 200, [['content-type', DOCKER]], 'docker-tag'),
      ex('GET', '/v2/d/manifests/sha256:1', [['accept', DOCKER]], 200, [['content-type', DOCKER]], 'docker-digest'),
    ]);
    // no Accept, or a wildcard only: the registry answers 404 for an OCI manifest
    expect(m.match({ method: 'GET', url: '/v2/r/manifests/v1', headers: [] })).toBeUndefined();
    expect(m.match({ method: 'GET', url: '/v2/r/manifests/v1', headers: [['accept', '*/*']] })).toBeUndefined();
    // schema2 by tag with no Accept: the registry rewrites it to schema1, which is not recorded
    expect(m.match({ method: 'GET', url: '/v2/d/manifests/v1', headers: [] })).toBeUndefined();
    // by digest it serves the stored manifest whatever the Accept
    expect(body(m.match({ method: 'GET', url: '/v2/d/manifests/sha256:1', headers: [] }))).toBe('docker-digest');
    expect(body(m.match({ method: 'GET', url: '/v2/d/manifests/sha256:1', headers: [['accept', OCI]] }))).toBe('docker-digest');
  });

  it('a recorded 206 answers only the range it was recorded for, in its own sequence; a full answer any range', () => {
    const url = '/v2/r/blobs/sha256:1';
    const m = new Matcher([
      ex('GET', url, [['range', 'bytes=0-9']], 206, [['content-range', 'bytes 0-9/100']], 'first ten'),
      ex('GET', url, [['range', 'bytes=100-109']], 416, [], 'unsatisfiable'),
      ex('GET', url, [['range', 'bytes=0-9']], 206, [['content-range', 'bytes 0-9/100']], 'first ten again'),
    ]);
    const get = (range?: string): LoadedExchange | undefined => m.match({ method: 'GET', url, headers: range ? [['range', range]] : [] });
    expect(body(get('bytes=100-109'))).toBe('unsatisfiable');
    expect(body(get('bytes = 0-9'))).toBe('first ten');
    expect(body(get('bytes=0-9'))).toBe('first ten again');
    expect(get('bytes=5-9')).toBeUndefined();
    expect(get()).toBeUndefined();
    expect(m.explain({ method: 'GET', url, headers: [['range', 'bytes=5-9']] }).nearest[0].why).toBe('Range (recorded for bytes=0-9, answered 206) differs');
    const full = new Matcher([ex('GET', url, [], 200, [], 'whole')]);
    expect(body(full.match({ method: 'GET', url, headers: [['range', 'bytes=5-9']] }))).toBe('whole');
  });

  it('prefers the recording made with the same Accept set', () => {
    const m = new Matcher([
      ex('GET', '/v2/r/manifests/v1', [['accept', INDEX], ['accept', OCI]], 200, [['content-type', INDEX]], 'index'),
      ex('GET', '/v2/r/manifests/v1', [['accept', OCI]], 200, [['content-type', OCI]], 'single'),
    ]);
    expect(body(m.match({ method: 'GET', url: '/v2/r/manifests/v1', headers: [['accept', OCI]] }))).toBe('single');
    expect(body(m.match({ method: 'GET', url: '/v2/r/manifests/v1', headers: [['accept', OCI], ['accept', INDEX]] }))).toBe('index');
  });

  it('counts the presence of credentials, never their value', () => {
    const m = new Matcher([
      ex('GET', '/v2/', [], 401, [], 'challenge'),
      ex('GET', '/v2/', [['authorization', 'Bearer <redacted>']], 200, [], 'ok'),
    ]);
    expect(body(m.match({ method: 'GET', url: '/v2/', headers: [] }))).toBe('challenge');
    expect(body(m.match({ method: 'GET', url: '/v2/', headers: [['Authorization', 'Bearer eyJnew']] }))).toBe('ok');
  });

  it('plays repeated requests in order, then repeats the last', () => {
    const m = new Matcher([ex('GET', '/v2/x', [], 500, [], 'first'), ex('GET', '/v2/x', [], 200, [], 'second')]);
    const r = { method: 'GET', url: '/v2/x', headers: [] };
    expect([m.match(r), m.match(r), m.match(r)].map(body)).toEqual(['first', 'second', 'second']);
  });

  it('answers HEAD from a recorded GET without using up the sequence', () => {
    const m = new Matcher([ex('GET', '/v2/r/blobs/sha256:1', [], 200, [], 'a'), ex('GET', '/v2/r/blobs/sha256:1', [], 200, [], 'b')]);
    expect(body(m.match({ method: 'HEAD', url: '/v2/r/blobs/sha256:1', headers: [] }))).toBe('a');
    expect(body(m.match({ method: 'GET', url: '/v2/r/blobs/sha256:1', headers: [] }))).toBe('a');
    expect(body(m.match({ method: 'GET', url: '/v2/r/blobs/sha256:1', headers: [] }))).toBe('b');
  });

  it('explains a miss with the nearest recordings and what differs', () => {
    const m = new Matcher([ex('GET', '/v2/r/manifests/v1', [], 200, [['content-type', OCI]]), ex('GET', '/v2/', [], 200)]);
    const miss = m.explain({ method: 'GET', url: '/v2/r/manifests/v2', headers: [['authorization', 'Basic x']] });
    expect(miss.request).toBe('GET /v2/r/manifests/v2');
    expect(miss.nearest[0].request).toBe('GET /v2/r/manifests/v1');
    expect(miss.nearest[0].why).toBe('path, credentials (recorded without Authorization) differ');
    const miss2 = m.explain({ method: 'GET', url: '/v2/r/manifests/v1', headers: [['accept', DOCKER]] });
    expect(miss2.nearest[0].why).toBe(`Accept (sent ${DOCKER}; the recorded manifest is ${OCI}, not among them) differs`);
  });

  it('ranks the same route kind first, shows each recorded request once, with the values that differ', () => {
    const m = new Matcher([
      ex('GET', '/v2/r/tags/list?n=1', [], 200, [], 'tags'),
      ex('GET', '/v2/r/blobs/sha256:aa', [], 401),
      ex('GET', '/v2/r/blobs/sha256:aa', [], 401),
      ex('GET', '/v2/r/blobs/sha256:aa', [], 200),
      ex('GET', '/v2/r/blobs/sha256:bb', [], 200),
      ex('GET', '/v2/r/manifests/v1', [], 200, [['content-type', OCI]]),
    ]);
    // a tags request: the recorded tags list first (same kind), though blob paths share as long a prefix
    const tags = m.explain({ method: 'GET', url: '/v2/r/tags/list?n=2', headers: [] });
    expect(tags.nearest[0]).toMatchObject({ request: 'GET /v2/r/tags/list?n=1', why: 'query (recorded ?n=1, sent ?n=2) differs' });
    // a blob: the three recordings of sha256:aa (a sequence) are one suggestion
    const blob = m.explain({ method: 'HEAD', url: '/v2/r/blobs/sha256:cc', headers: [] });
    expect(blob.nearest.map((n) => n.request).slice(0, 2)).toEqual(['GET /v2/r/blobs/sha256:aa', 'GET /v2/r/blobs/sha256:bb']);
    expect(blob.nearest).toHaveLength(3);
    const put = m.explain({ method: 'PUT', url: '/v2/r/blobs/sha256:aa', headers: [] });
    expect(put.nearest[0].why).toBe('method (recorded GET, sent PUT) differs');
  });

  it('keeps requests without a response aside', () => {
    const lone: LoadedExchange = { request: { method: 'GET', url: '/v2/', headers: [], body: { kind: 'none' } }, store };
    const m = new Matcher([lone]);
    expect(m.size).toBe(0);
    expect(m.unservable).toEqual([lone]);
  });
});

describe('mirror requests', () => {
  it("ignore containerd's ns= parameter", () => {
    expect(normalizeQuery('ns=docker.io')).toBe('');
    expect(normalizeQuery('n=10&ns=docker.io')).toBe(normalizeQuery('n=10'));
  });
});
