import * as fs from 'node:fs';
import * as path from 'node:path';
import { readMarkdown, writeMarkdown } from '../../src/fixture/markdown';
import { readYaml, writeYaml } from '../../src/fixture/yaml';
import { Exchange, FixtureError } from '../../src/fixture/model';
import { parseHeaderLine, formatHeaderLine } from '../../src/fixture/headers-notation';

const SEED = path.join(__dirname, '../../fixtures/seed/000_8e17b29b7c377181.txt');

describe('the seed document', () => {
  const exchanges = readMarkdown(fs.readFileSync(SEED, 'utf8'), 'seed.txt');

  it('reads two exchanges: the challenge and the authorized request', () => {
    expect(exchanges).toHaveLength(2);
    const [ping, auth] = exchanges;
    expect(ping.request.method).toBe('GET');
    expect(ping.request.url).toBe('/v2/');
    expect(ping.comments).toEqual(['docker cli', 'https://registry-1.docker.io/v2']);
    // the headers block whose closing brace is missing
    expect(ping.request.headers.map(([n]) => n)).toEqual(['host', 'user-agent', 'accept-encoding', 'connection']);
    expect(ping.request.headers[1][1]).toContain('UpstreamClient(Docker-Client/19.03.12 \\(linux\\))');
    expect(ping.request.body).toEqual({ kind: 'none' });
    // no status line: taken from the registry error code in the body
    expect(ping.response?.status).toBe(401);
    expect(ping.response?.headers).toContainEqual(['www-authenticate', 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"']);
    expect(ping.response?.body).toEqual({
      kind: 'inline',
      text: '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}\n',
    });
    // the `auth` section: a request captured without a response
    expect(auth.response).toBeUndefined();
    expect(auth.request.url).toBe('/v2/');
    expect(auth.request.headers.find(([n]) => n === 'authorization')?.[1]).toMatch(/^Bearer eyJ/);
    expect(auth.request.headers.find(([n]) => n === 'accept')?.[1]).toContain('application/vnd.oci.image.index.v1+json');
  });

  it('the 401 body length matches the recorded content-length', () => {
    const body = exchanges[0].response!.body;
    expect(body.kind).toBe('inline');
    expect(Buffer.byteLength((body as { text: string }).text)).toBe(87);
  });
});

const tricky: Exchange[] = [
  {
    comments: ['GET /v2/ -> 401'],
    request: {
      method: 'GET',
      url: '/v2/?a=1&b=%2F',
      headers: [
        ['accept', 'application/json'],
        ['accept', 'text/plain'],
        ['user-agent', "it's \\(linux\\) \"quoted\""],
        ['x-ctl', 'tab\there'],
      ],
      body: { kind: 'none' },
    },
    response: {
      status: 401,
      headers: [['www-authenticate', 'Bearer realm="http://regtape.invalid/token",service="x"']],
      body: { kind: 'inline', text: '{"errors":[]}\n' },
    },
  },
  {
    request: { method: 'PUT', url: '/v2/r/manifests/v1', headers: [], body: { kind: 'inline', text: 'line1\n```\nnot a fence\n````\n\n  indented \u00e9\u4e2d\n' } },
    response: { status: 201, headers: [], body: { kind: 'none' } },
  },
  {
    request: { method: 'GET', url: '/v2/r/blobs/sha256:' + 'a'.repeat(64), headers: [], body: { kind: 'none' } },
    response: { status: 200, headers: [['content-type', 'application/octet-stream']], body: { kind: 'stored', digest: 'sha256:' + 'a'.repeat(64), size: 12345 } },
  },
  {
    request: { method: 'POST', url: '/t', headers: [], body: { kind: 'inline', text: '' } },
    response: { status: 200, headers: [], body: { kind: 'inline', text: 'no trailing newline' } },
  },
];

const strip = (xs: Exchange[]): Exchange[] => xs.map(({ source: _s, ...rest }) => rest);

describe('round trips', () => {
  it('markdown: write then read gives the same exchanges, bodies byte-exact', () => {
    const text = writeMarkdown(tricky);
    const back = strip(readMarkdown(text, 'x.md'));
    // an empty inline body reads back as inline empty text: same bytes
    expect(back).toEqual(tricky);
    expect(writeMarkdown(back)).toBe(text);
  });

  it('yaml: write then read gives the same exchanges', () => {
    const text = writeYaml(tricky);
    const back = strip(readYaml(text, 'x.yaml'));
    expect(back).toEqual(tricky);
    expect(writeYaml(back)).toBe(text);
  });

  it('header notation: quoting and escapes survive', () => {
    for (const v of ["a'b", 'back\\slash', 'tab\t', 'nul\u0000x', 'é']) {
      expect(parseHeaderLine(formatHeaderLine('x-h', v))).toEqual(['x-h', v]);
    }
    expect(parseHeaderLine(`"double": "q\\"x",`)).toEqual(['double', 'q"x']);
    expect(parseHeaderLine('bare: value,')).toEqual(['bare', 'value']);
  });
});

describe('broken fixtures say where and what', () => {
  const err = (text: string, file = 'f.md'): FixtureError => {
    try {
      (file.endsWith('.md') ? readMarkdown : readYaml)(text, file);
    } catch (e) {
      expect(e).toBeInstanceOf(FixtureError);
      return e as FixtureError;
    }
    throw new Error('expected a FixtureError');
  };

  it('a request without url', () => {
    const e = err('# t\n## in\n```\nmethod GET\nno body\n```\n');
    expect(e.message).toBe("f.md:4: the '## in' block has no 'url' line (e.g. url /v2/)");
  });
  it('an unclosed block', () => {
    expect(err('## in\n```\nurl /v2/\nmethod GET\n').message).toMatch(/^f\.md:2: the code block opened here is never closed/);
  });
  it('a bad header line names the line', () => {
    const e = err("## in\n```\nurl /v2/\nmethod GET\nheaders {\n  'x: 'y'\n}\n```\n");
    expect(e.line).toBe(6);
    expect(e.message).toMatch(/f\.md:6: /);
  });
  it('a bad status', () => {
    expect(err('## in\n```\nurl /\nmethod GET\n```\n## out\n```\nstatus 999\n```\n').message).toBe('f.md:8: status 999 is not an HTTP status (100-599)');
  });
  it('an unreadable body reference', () => {
    expect(err('## in\n```\nurl /\nmethod GET\nbody sha256:xyz 3 bytes\n```\n').message).toMatch(/^f\.md:5: unreadable body line/);
  });
  it('## out without ## in', () => {
    expect(err('## out\n```\nstatus 200\n```\n').message).toBe("f.md:1: '## out' without a '## in' before it");
  });
  it('yaml: syntax, shape and alias bombs', () => {
    expect(err('exchanges: [\n', 'f.yaml').message).toMatch(/^f\.yaml:\d+: YAML: /);
    expect(err('exchanges:\n  - in: {method: GET}\n', 'f.yaml').message).toBe("f.yaml:2: exchange 1: 'in.url' must be a path starting with / (e.g. /v2/)");
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x"]', ...Array.from({ length: 8 }, (_, i) => `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)},*${String.fromCharCode(97 + i)}]`), 'exchanges: *i'].join('\n');
    expect(err(bomb, 'f.yaml').message).toMatch(/^f\.yaml:\d+: /);
  });
});
