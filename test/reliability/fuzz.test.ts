// Bad input for the fixture readers and the matcher (fast-check properties and hand-made hostile
// documents): they return exchanges or throw FixtureError, nothing else; every call is fast; a fixture
// can never make regtape read a file outside its folder.
import fc from 'fast-check';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readMarkdown, writeMarkdown } from '../../src/fixture/markdown';
import { readYaml, writeYaml } from '../../src/fixture/yaml';
import { loadFixtures, LoadedExchange } from '../../src/fixture/files';
import { Body, Exchange, FixtureError, HeaderList } from '../../src/fixture/model';
import { isInlineSafeText } from '../../src/fixture/markdown';
import { Matcher } from '../../src/replay/match';
import { RequestView } from '../../src/fixture/identity';
import { timed } from '../support/reliability';

jest.setTimeout(120_000);

const RUNS = { numRuns: 200, interruptAfterTimeLimit: 15_000 };
const HEX = 'ab'.repeat(32);
const EXAMPLE = path.join(__dirname, '../../examples/hello-pull');
const SEED = path.join(__dirname, '../../fixtures/seed/000_8e17b29b7c377181.txt');

/** Asserts the reader's contract for one input: exchanges or a FixtureError, never another error. */
function checkReader(read: (text: string, file: string) => Exchange[], text: string, file: string): void {
  const r = timed(() => read(text, file));
  if (r.error !== undefined) {
    if (!(r.error instanceof FixtureError)) {
      throw new Error(`threw ${(r.error as Error)?.constructor?.name}: ${(r.error as Error)?.message} (not a FixtureError)`);
    }
    expect(r.error.file).toBe(file);
    expect(r.error.line).toBeGreaterThanOrEqual(1);
    return;
  }
  // plain checks (not one expect per exchange: documents here hold up to 100k of them)
  const problems: string[] = [];
  if (!Array.isArray(r.value)) problems.push('did not return an array');
  for (const ex of r.value ?? []) {
    if (typeof ex.request.url !== 'string' || !ex.request.url.startsWith('/')) problems.push(`url ${JSON.stringify(ex.request.url)}`);
    if (typeof ex.request.method !== 'string') problems.push(`method ${JSON.stringify(ex.request.method)}`);
    for (const b of [ex.request.body, ex.response?.body]) {
      if (b?.kind === 'stored' && !/^sha256:[0-9a-f]{64}$/.test(b.digest)) problems.push(`stored body ${JSON.stringify(b.digest)}`);
    }
    const st = ex.response?.status;
    if (ex.response && !(Number.isInteger(st) && st! >= 100 && st! <= 599)) problems.push(`status ${st}`);
    if (problems.length) break;
  }
  expect(problems).toEqual([]);
}

const MD_FRAGMENTS = [
  '## in', '## out', '##in', '## IN', 'auth', '```', '````', '`````', '``` md', '~~~', '# GET /v2/ -> 200', '#', '###',
  'url /v2/', 'url /v2/demo/hello/manifests/v1?n=1&last=a', 'url v2', 'url ', 'url /a b', 'method GET', 'method HEAD', 'method G3T', 'method',
  'status 200', 'status 404 Not Found', 'status 999', 'status 20', 'status abc',
  'headers {', 'headers {}', 'headers {},', '{', '}', '},', '',
  "  accept: 'application/vnd.oci.image.manifest.v1+json',", "  'content-type': \"application/json\"", '  bare: value,', "  a: 'x\\x4'", "  a: '\\u12'",
  "  a: 'unterminated", "  a: 'x' trailing", "  'unterminated: 'v'", '  : nothing', "  'a b': 'c'", '  a\\: b', "  content-length: '3'",
  'body', 'no body', `body sha256:${HEX} 3 bytes`, `body sha256:${HEX} 1 byte`, `body sha256:${HEX} 99999999999999999999999 bytes`,
  'body sha256:../../etc/passwd 3 bytes', `body sha256:${HEX.toUpperCase()} 3 bytes`, 'body sha256:', 'bodyx', 'body  ',
  '{"errors":[{"code":"UNAUTHORIZED","message":"x"}]}', '{"errors":[{"code":"__proto__"}]}', '{"errors":null}',
  '\0', '\r', '\u2028', '\ufeff', '\ud800', '\t', ' ', '`', '\\',
];

const YAML_FRAGMENTS = [
  'exchanges:', 'exchanges: []', 'exchanges: {}', 'exchanges: null', '- in:', '  - in:', '    in:', '    out:', '  - comment: hi',
  '      method: GET', '      method: 1', '      method: "G E T"', '      url: /v2/', '      url: v2', '      url: [1]',
  '      headers:', '        - accept: application/json', '        - {a: 1, b: 2}', '        - a: [x]', '      headers: {a: b}', '      headers: 3',
  '      body: null', '      body: {text: hi}', '      body: hello', `      body: {sha256: ${HEX}, size: 3}`, "      body: {sha256: '../../x', size: 3}",
  `      body: {sha256: ${HEX}, size: -1}`, `      body: {sha256: ${HEX}, size: 1e400}`, '      body: [1]',
  '      status: 200', '      status: 99999', '      status: 1.5', '      status: "200"',
  '&a [1, 2]', '*a', '*missing', '<<: *a', 'x: &x [*x]', '!!binary aGk=', '!!js/function "f"', '!!str 1', '!<tag:yaml.org,2002:map>', '? [a]', ': b',
  '%YAML 1.1', '%TAG ! tag:x,2000:', '---', '...', '{', '[', '"', "'", '|', '>', '# c', '\t', '\0', '\ufeff', '__proto__: {a: 1}', 'constructor: x',
];

const fragmentDoc = (frags: string[]): fc.Arbitrary<string> =>
  fc
    .tuple(fc.array(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...frags) }, { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) }), { maxLength: 60 }), fc.constantFrom('\n', '\r\n', ''))
    .map(([parts, sep]) => parts.join(sep));

describe('readMarkdown on bad input', () => {
  it('arbitrary strings: exchanges or FixtureError, fast', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 3000 }), (s) => checkReader(readMarkdown, s, 'f.md')), RUNS);
  });

  it('arbitrary strings after a `## in` section header', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 3000 }), (s) => checkReader(readMarkdown, '## in\n```\n' + s, 'f.md')), RUNS);
  });

  it('documents built from fixture-like fragments', () => {
    fc.assert(fc.property(fragmentDoc(MD_FRAGMENTS), (s) => checkReader(readMarkdown, s, 'f.md')), RUNS);
  });

  it('fragments spliced into a real fixture (the seed document)', () => {
    const seed = fs.readFileSync(SEED, 'utf8').split('\n');
    fc.assert(
      fc.property(fc.nat(seed.length), fc.nat(3), fragmentDoc(MD_FRAGMENTS), (at, drop, ins) => {
        const lines = [...seed];
        lines.splice(at, drop, ins);
        checkReader(readMarkdown, lines.join('\n'), 'seed.txt');
      }),
      RUNS,
    );
  });

  const hostile: Array<[string, string]> = [
    ['a 1 MB header line', "## in\n```\nurl /v2/\nmethod GET\nheaders {\n  a: '" + 'x'.repeat(1 << 20) + "'\n}\n\nno body\n```\n"],
    ['a 1 MB unquoted header line', '## in\n```\nurl /v2/\nmethod GET\nheaders {\n  a: ' + 'x, '.repeat(1 << 18) + '\n}\n\nno body\n```\n'],
    ['a 1 MB header name with no colon', '## in\n```\nurl /v2/\nmethod GET\nheaders {\n  a' + ' '.repeat(1 << 20) + 'x\n}\n```\n'],
    ['a 1 MB url line', '## in\n```\nurl /' + 'a'.repeat(1 << 20) + '\nmethod GET\n\nno body\n```\n'],
    ['a 1 MB fence', '## in\n' + '`'.repeat(1 << 20) + '\nurl /v2/\nmethod GET\n\nno body\n' + '`'.repeat(1 << 20) + '\n'],
    ['1 MB of comment', '#'.repeat(1 << 20) + '\n## in\n```\nurl /v2/\nmethod GET\n```\n'],
    ['100k fences', '## in\n' + '```\n'.repeat(100_000)],
    ['100k exchanges', '## in\n```\nurl /v2/\nmethod GET\n```\n'.repeat(100_000)],
    ['NUL bytes everywhere', '## in\n```\nurl /v2/\0\nmethod GET\nheaders {\n  a\0: \'\0\'\n}\n\nbody\n\0\0\0\n```\n'],
    ['a NUL in the section header', '## in\0\n```\nurl /v2/\n```\n'],
    ['a traversal in a body reference', '## in\n```\nurl /v2/\nmethod GET\n\nbody sha256:../../etc/passwd 3 bytes\n```\n'],
    ['an encoded traversal', '## in\n```\nurl /v2/\nmethod GET\n\nbody sha256:..%2f..%2fetc%2fpasswd 3 bytes\n```\n'],
    ['an absolute path as a body reference', '## out\n```\nstatus 200\n\nbody sha256:/etc/passwd 3 bytes\n```\n'],
    ['an unclosed block', '## in\n```\nurl /v2/\nmethod GET\n'],
    ['## out first', '## out\n```\nstatus 200\n```\n'],
  ];
  it.each(hostile)('%s: exchanges or FixtureError, fast', (_what, text) => {
    checkReader(readMarkdown, text, 'f.md');
  });

  it('a body reference that is not a digest is refused (never taken as a path)', () => {
    for (const ref of ['../../etc/passwd', '..%2f..%2fetc%2fpasswd', '/etc/passwd', `${HEX.slice(0, 62)}/.`]) {
      expect(() => readMarkdown(`## in\n\`\`\`\nurl /v2/\nmethod GET\n\nbody sha256:${ref} 3 bytes\n\`\`\`\n`, 'f.md')).toThrow(FixtureError);
    }
  });
});

describe('readYaml on bad input', () => {
  it('arbitrary strings: exchanges or FixtureError, fast', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 3000 }), (s) => checkReader(readYaml, s, 'f.yaml')), RUNS);
  });

  it('documents built from YAML fixture-like fragments', () => {
    fc.assert(fc.property(fragmentDoc(YAML_FRAGMENTS), (s) => checkReader(readYaml, s, 'f.yaml')), RUNS);
  });

  it('arbitrary JSON values as exchanges (YAML is a superset of JSON)', () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => checkReader(readYaml, JSON.stringify({ exchanges: [v] }), 'f.yaml')), RUNS);
    fc.assert(
      fc.property(fc.record({ method: fc.jsonValue(), url: fc.jsonValue(), headers: fc.jsonValue(), body: fc.jsonValue() }), fc.jsonValue(), (inp, out) =>
        checkReader(readYaml, JSON.stringify({ exchanges: [{ in: { ...inp, url: typeof inp.url === 'string' ? '/' + inp.url : inp.url }, out }] }), 'f.yaml'),
      ),
      RUNS,
    );
  });

  const laughs = (top: string): string => {
    let s = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n';
    for (let i = 1; i < 10; i++) s += `a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(',')}]\n`;
    return s + top;
  };
  const hostile: Array<[string, string]> = [
    ['10k levels of flow sequences', 'exchanges: ' + '['.repeat(10_000) + ']'.repeat(10_000)],
    ['10k levels of flow mappings', 'exchanges: ' + '{a: '.repeat(10_000) + '1' + '}'.repeat(10_000)],
    ['10k levels of block sequences', 'exchanges:\n  ' + '- '.repeat(10_000) + 'x'],
    ['10k levels of nesting in a header value', 'exchanges:\n  - in: {method: GET, url: /v2/, headers: [{a: ' + '['.repeat(10_000) + ']'.repeat(10_000) + '}]}\n'],
    ['billion laughs under exchanges', laughs('exchanges: [*a9]\n')],
    ['billion laughs beside exchanges', laughs('exchanges: []\n')],
    ['billion laughs in a header', laughs('exchanges:\n  - in: {method: GET, url: /v2/, headers: [{a: *a9}]}\n')],
    ['a recursive alias', 'exchanges: &x [*x]\n'],
    ['a 1 MB header value', "exchanges:\n  - in: {method: GET, url: /v2/, headers: [{a: '" + 'x'.repeat(1 << 20) + "'}]}\n"],
    ['a 1 MB key', 'exchanges: []\n' + 'x'.repeat(1 << 20) + ': 1\n'],
    ['NUL bytes', 'exchanges:\n  - in: {method: GET, url: "/v2/\\0", headers: [{"\\0": "\\0"}]}\n\0'],
    ['a traversal in a body reference', "exchanges:\n  - in: {method: GET, url: /v2/, body: {sha256: '../../x', size: 3}}\n"],
    ['a traversal after a digest prefix', "exchanges:\n  - in: {method: GET, url: /v2/, body: {sha256: 'sha256:../../etc/passwd', size: 3}}\n"],
    ['a digest with a trailing newline', `exchanges:\n  - in: {method: GET, url: /v2/, body: {sha256: "${HEX}\\n", size: 3}}\n`],
    ['__proto__ headers', 'exchanges:\n  - in: {method: GET, url: /v2/, headers: [{__proto__: x}, {constructor: y}]}\n'],
    ['20k headers in a mapping', 'exchanges:\n  - in:\n      method: GET\n      url: /v2/\n      headers:\n' + Array.from({ length: 20_000 }, (_, i) => `        h${i}: v\n`).join('')],
  ];
  it.each(hostile)('%s: exchanges or FixtureError, fast', (_what, text) => {
    checkReader(readYaml, text, 'f.yaml');
  });

  it('a body reference that is not a digest is refused', () => {
    for (const ref of ['../../x', 'sha256:../../etc/passwd', '/etc/passwd', `${HEX}/../../x`]) {
      expect(() => readYaml(`exchanges:\n  - in: {method: GET, url: /v2/, body: {sha256: '${ref}', size: 3}}\n`, 'f.yaml')).toThrow(FixtureError);
    }
  });
});

describe('writing then reading gives the same exchanges back (both formats)', () => {
  const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}$/).filter((n) => n.toLowerCase() !== 'content-length');
  const headerValue = fc.string({ unit: fc.constantFrom(...'\t !"\'`\\,:;{}=/abcXYZ019\u00e9\u00ff'.split('')), maxLength: 30 });
  const headers: fc.Arbitrary<HeaderList> = fc.array(fc.tuple(token, headerValue), { maxLength: 6 });
  const inlineText = fc
    .array(fc.oneof(fc.string({ unit: 'grapheme', maxLength: 30 }), fc.constantFrom('```', '````', '  ```', '## in', '## out', 'body', '}', '')), { maxLength: 8 })
    .map((l) => l.join('\n'))
    .filter((t) => isInlineSafeText(t) && Buffer.byteLength(t) <= 64 * 1024);
  const body: fc.Arbitrary<Body> = fc.oneof(
    fc.constant<Body>({ kind: 'none' }),
    inlineText.map<Body>((text) => ({ kind: 'inline', text })),
    fc.tuple(fc.stringMatching(/^[0-9a-f]{64}$/), fc.nat()).map<Body>(([hex, size]) => ({ kind: 'stored', digest: 'sha256:' + hex, size })),
  );
  const url = fc.array(fc.stringMatching(/^[A-Za-z0-9._:%?=&~-]{1,12}$/), { maxLength: 5 }).map((segs) => '/v2/' + segs.join('/'));
  const exchange: fc.Arbitrary<Exchange> = fc.record({
    request: fc.record({ method: fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'), url, headers, body }),
    // 1xx statuses are refused by the readers (fixture/validate.ts)
    response: fc.record({ status: fc.integer({ min: 200, max: 599 }), headers, body }),
  });
  const strip = (exs: Exchange[]): Exchange[] => exs.map(({ request, response }) => ({ request, ...(response ? { response } : {}) }));

  it('markdown', () => {
    fc.assert(fc.property(fc.array(exchange, { minLength: 1, maxLength: 3 }), (exs) => expect(strip(readMarkdown(writeMarkdown(exs), 'f.md'))).toEqual(exs)), RUNS);
  });
  it('yaml', () => {
    fc.assert(fc.property(fc.array(exchange, { minLength: 1, maxLength: 3 }), (exs) => expect(strip(readYaml(writeYaml(exs), 'f.yaml'))).toEqual(exs)), RUNS);
  });
});

describe('loadFixtures never reads outside the fixtures folder', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

  const hostileFolders: Array<[string, Record<string, string>]> = [
    ['markdown: body sha256:../../etc/passwd', { 'GET_x.md': '## in\n```\nurl /v2/\nmethod GET\n\nno body\n```\n## out\n```\nstatus 200\n\nbody sha256:../../etc/passwd 3 bytes\n```\n' }],
    ['markdown: request body sha256:/etc/passwd', { 'sub/GET_x.md': '## in\n```\nurl /v2/\nmethod POST\n\nbody sha256:/etc/passwd 3 bytes\n```\n' }],
    ['yaml: {sha256: ../../x}', { 'GET_x.yaml': "exchanges:\n  - in: {method: GET, url: /v2/}\n    out: {status: 200, body: {sha256: '../../x', size: 3}}\n" }],
    ['yaml: {sha256: sha256:../../../../etc/passwd}', { 'a/b/GET_x.yaml': "exchanges:\n  - in: {method: GET, url: /v2/}\n    out: {status: 200, body: {sha256: 'sha256:../../../../etc/passwd', size: 3}}\n" }],
  ];

  it.each(hostileFolders)('%s: FixtureError, and no file outside the folder is touched', async (_what, files) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-hostile-'));
    dirs.push(dir);
    for (const [rel, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      fs.writeFileSync(path.join(dir, rel), text);
    }
    const touched: string[] = [];
    const spies = (['readFile', 'stat', 'open', 'lstat', 'access', 'readdir'] as const).map((name) => {
      const original = fs.promises[name] as (...a: unknown[]) => unknown;
      return jest.spyOn(fs.promises, name).mockImplementation(((p: unknown, ...rest: unknown[]) => {
        touched.push(String(p));
        return original.call(fs.promises, p, ...rest);
      }) as never);
    });
    try {
      await expect(loadFixtures([dir])).rejects.toThrow(FixtureError);
    } finally {
      spies.forEach((s) => s.mockRestore());
    }
    const outside = touched.map((p) => path.resolve(p)).filter((p) => p !== dir && !p.startsWith(dir + path.sep));
    expect(outside).toEqual([]);
  });
});

describe('the matcher on arbitrary requests', () => {
  let matcher: Matcher;
  beforeAll(async () => {
    const loaded = await loadFixtures([EXAMPLE, SEED]);
    matcher = new Matcher(loaded.exchanges as LoadedExchange[]);
  });

  const URL_FRAGMENTS = [
    '/v2/', '/v2', 'demo/hello', 'manifests', 'blobs', 'uploads', 'tags/list', '_catalog', 'referrers', 'v1', `sha256:${HEX}`, 'sha256:', '..', '.', '%2e%2e',
    '%', '%ZZ', '%E0%A4%A', '%ED%A0%80', '%00', '%2F', '?', '&', '=', 'n=1', 'last=', 'digest=sha256:x', '_state=abc', '#', '/', '//', '__regtape/token/https/auth.docker.io/token',
    '__regtape/redirect/https/cdn/x', '/__regtape/token/', '?service=a&scope=repository:x:pull', ' ', '\0', '\ud800', '\u00ff',
  ];
  const urlArb = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 200 }),
    fc.array(fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...URL_FRAGMENTS) }, { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 10 }) }), { maxLength: 12 }).map((p) => p.join('/')),
    fc.array(fc.constantFrom(...URL_FRAGMENTS), { maxLength: 12 }).map((p) => p.join('')),
  );
  const headerName = fc.oneof(fc.constantFrom('accept', 'Accept', 'authorization', 'AUTHORIZATION', 'content-type', 'range'), fc.string({ unit: 'binary', maxLength: 20 }));
  const requestArb: fc.Arbitrary<RequestView> = fc.record(
    {
      method: fc.oneof(fc.constantFrom('GET', 'HEAD', 'head', 'POST', 'PUT', 'PATCH', 'DELETE', ''), fc.string({ unit: 'binary', maxLength: 10 })),
      url: urlArb,
      headers: fc.array(fc.tuple(headerName, fc.string({ unit: 'binary', maxLength: 60 })), { maxLength: 8 }),
      form: fc.string({ unit: 'binary', maxLength: 100 }),
    },
    { requiredKeys: ['method', 'url', 'headers'] },
  );
  const examples: Array<[RequestView]> = [
    [{ method: 'GET', url: '/v2/demo/hello/manifests/%ZZ', headers: [] }],
    [{ method: 'HEAD', url: '/v2/demo/hello/manifests/%E0%A4%A', headers: [['accept', '*/*']] }],
    [{ method: 'GET', url: '/v2/demo/hello/manifests/v1?\ud800=%ZZ', headers: [['authorization', '\ud800']] }],
    [{ method: 'POST', url: '/__regtape/token/https/auth.docker.io/token', headers: [], form: 'scope=%ZZ&service=\ud800' }],
  ];

  it('match() never throws', () => {
    fc.assert(
      fc.property(requestArb, (req) => {
        const ex = matcher.match(req);
        if (ex !== undefined) expect(ex.response).toBeDefined();
      }),
      { ...RUNS, examples },
    );
  });

  it('explain() never throws and names the request', () => {
    fc.assert(
      fc.property(requestArb, (req) => {
        const miss = matcher.explain(req);
        expect(typeof miss.request).toBe('string');
        expect(Array.isArray(miss.nearest)).toBe(true);
      }),
      { ...RUNS, examples },
    );
  });
});
