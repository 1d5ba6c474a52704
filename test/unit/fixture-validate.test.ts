// Loading refuses, with file:line, what replay could not serve correctly; symlinks are followed or
// refused with a message, never skipped; a body store symlink never leads out of the fixtures folder.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadFixtures, parseFixture, FixturePathError } from '../../src/fixture/files';
import { FixtureError } from '../../src/fixture/model';
import { headerProblem } from '../../src/fixture/validate';
import { unitTempDirs } from '../support/tmp';

const tmp = unitTempDirs();

const md = (out: string, method = 'GET'): string =>
  ['## in', '```', 'url /v2/x/blobs/sha256:' + 'a'.repeat(64), `method ${method}`, '', 'no body', '```', '', '## out', '```', ...out.split('\n'), '```', ''].join('\n');

function problem(text: string, file = 'f.md'): { line: number; problem: string } {
  try {
    parseFixture(text, file);
  } catch (e) {
    expect(e).toBeInstanceOf(FixtureError);
    return { line: (e as FixtureError).line, problem: (e as FixtureError).problem };
  }
  throw new Error('parsed without complaint');
}

describe('markdown fixtures that cannot be served are refused with file:line', () => {
  it('a CR or LF in a header value, at the header line', () => {
    const p = problem(md("status 200\nheaders {\n  'content-type': 'text/plain',\n  'x-evil': 'a\\r\\nSet-Cookie: x=1'\n}\n\nbody\nhi"));
    expect(p.line).toBe(14);
    expect(p.problem).toBe('the value of x-evil contains a CR, which HTTP cannot carry in a header');
    expect(problem(md("status 200\nheaders {\n  'x-evil': 'a\\nb'\n}\n\nno body")).problem).toContain('contains a LF');
    expect(problem(md("status 200\nheaders {\n  'x-evil': 'a\\x00b'\n}\n\nno body")).problem).toContain('U+0000');
  });

  it('an invalid header name, in a request as well', () => {
    const p = problem(md("status 200\nheaders {\n  'x(y)': 'v'\n}\n\nno body"));
    expect(p.line).toBe(13);
    expect(p.problem).toMatch(/^invalid header name "x\(y\)"/);
    const inReq = '## in\n```\nurl /v2/\nmethod GET\nheaders {\n  \'a/b\': \'1\'\n}\n\nno body\n```\n';
    expect(problem(inReq).line).toBe(6);
  });

  it('a 1xx status, at the status line', () => {
    for (const s of [100, 101, 103]) {
      const p = problem(md(`status ${s}\n\nno body`));
      expect(p.line).toBe(11);
      expect(p.problem).toContain(`status ${s} is an interim (1xx) response`);
    }
  });

  it('a content-length with no body, except for HEAD, 204 and 304', () => {
    const p = problem(md("status 200\nheaders {\n  'content-length': '1234'\n}\n\nno body"));
    expect(p.line).toBe(1);
    expect(p.problem).toContain("the response says content-length 1234 but has no body");
    expect(problem(md("status 200\nheaders {\n  'content-length': 'lots'\n}\n\nbody\nx")).problem).toContain('is not a byte count');
    expect(parseFixture(md("status 200\nheaders {\n  'content-length': '1234'\n}\n\nno body", 'HEAD'), 'f.md')).toHaveLength(1);
    expect(parseFixture(md("status 304\nheaders {\n  'content-length': '1234'\n}\n\nno body"), 'f.md')).toHaveLength(1);
    expect(parseFixture(md("status 202\nheaders {\n  'content-length': '0'\n}\n\nno body"), 'f.md')).toHaveLength(1);
  });
});

describe('YAML fixtures: the same checks', () => {
  const y = (out: string): string => `exchanges:\n  - in:\n      method: GET\n      url: /v2/\n    out:\n${out}`;
  it('header value with CR, invalid name, 1xx, length without body', () => {
    expect(problem(y('      status: 200\n      headers:\n        - x-evil: "a\\rb"\n'), 'f.yaml')).toEqual({ line: 2, problem: "exchange 1: 'out.headers': the value of x-evil contains a CR, which HTTP cannot carry in a header" });
    expect(problem(y('      status: 200\n      headers:\n        - "bad name": v\n'), 'f.yaml').problem).toContain('invalid header name "bad name"');
    expect(problem(y('      status: 101\n'), 'f.yaml').problem).toContain('status 101 is an interim (1xx) response');
    expect(problem(y('      status: 200\n      headers:\n        - content-length: "99"\n'), 'f.yaml')).toEqual({ line: 2, problem: expect.stringContaining('content-length 99 but has no body') });
  });
});

describe('headerProblem', () => {
  it('accepts what HTTP carries, including tabs and latin-1', () => {
    expect(headerProblem('WWW-Authenticate', 'Bearer realm="x",\tservice="é"')).toBeUndefined();
    expect(headerProblem('x_y.z~1', '')).toBeUndefined();
    expect(headerProblem('', 'v')).toContain('invalid header name');
    expect(headerProblem('a', 'snow ☃')).toContain('U+2603');
  });
});

describe('symlinks', () => {
  const fixture = (url = '/v2/'): string => `## in\n\`\`\`\nurl ${url}\nmethod GET\n\nno body\n\`\`\`\n\n## out\n\`\`\`\nstatus 200\n\nbody\n{}\n\`\`\`\n`;

  it('a symlinked fixture file or folder inside the fixtures folder is followed, once', async () => {
    const d = tmp();
    fs.mkdirSync(path.join(d, 'real'));
    fs.writeFileSync(path.join(d, 'real', 'a.md'), fixture('/v2/a'));
    fs.symlinkSync(path.join(d, 'real', 'a.md'), path.join(d, 'link.md'));
    fs.symlinkSync(path.join(d, 'real'), path.join(d, 'linked-folder'));
    fs.symlinkSync(d, path.join(d, 'real', 'loop')); // a loop back to the top
    const r = await loadFixtures([d]);
    // real/ is read once (through the link or itself), the loop is not followed twice
    expect(r.files.map((f) => path.basename(f)).sort()).toEqual(['a.md', 'link.md']);
    expect(r.exchanges).toHaveLength(2);
  });

  it('a symlink out of the fixtures folder, or a broken one, is refused with a message', async () => {
    const outside = tmp();
    fs.writeFileSync(path.join(outside, 'x.md'), fixture());
    const d = tmp();
    fs.symlinkSync(path.join(outside, 'x.md'), path.join(d, 'x.md'));
    await expect(loadFixtures([d])).rejects.toThrow(new FixturePathError(`${path.join(d, 'x.md')} is a symlink out of the fixtures folder (to ${fs.realpathSync(path.join(outside, 'x.md'))}): regtape does not follow it; pass ${fs.realpathSync(path.join(outside, 'x.md'))} to replay as another path instead`));
    const e = tmp();
    fs.symlinkSync(path.join(e, 'nothing.md'), path.join(e, 'broken.md'));
    await expect(loadFixtures([e])).rejects.toThrow(/broken\.md is a symlink to nothing \(broken\)/);
  });

  it('a body in the store that is a symlink out of the fixtures folder is refused; one inside is served', async () => {
    const secret = tmp();
    const target = path.join(secret, 'secret');
    fs.writeFileSync(target, 'top secret');
    const hex = 'b'.repeat(64);
    const d = tmp();
    fs.mkdirSync(path.join(d, 'bodies', 'sha256'), { recursive: true });
    fs.symlinkSync(target, path.join(d, 'bodies', 'sha256', hex));
    const f = `## in\n\`\`\`\nurl /v2/x/blobs/sha256:${hex}\nmethod GET\n\nno body\n\`\`\`\n\n## out\n\`\`\`\nstatus 200\n\nbody sha256:${hex} 10 bytes\n\`\`\`\n`;
    fs.writeFileSync(path.join(d, 'blob.md'), f);
    await expect(loadFixtures([d])).rejects.toThrow(/blob\.md:1: body sha256:b{64} in the store .* is a symlink out of the fixtures folder/);
    // the whole bodies/ folder linked elsewhere: the same
    const e = tmp();
    fs.mkdirSync(path.join(secret, 'sha256'));
    fs.copyFileSync(target, path.join(secret, 'sha256', hex));
    fs.symlinkSync(secret, path.join(e, 'bodies'));
    fs.writeFileSync(path.join(e, 'blob.md'), f);
    await expect(loadFixtures([e])).rejects.toThrow(/is a symlink out of the fixtures folder/);
    // inside the folder: fine
    const ok = tmp();
    fs.mkdirSync(path.join(ok, 'bodies', 'sha256'), { recursive: true });
    fs.writeFileSync(path.join(ok, 'kept'), 'top secret');
    fs.symlinkSync(path.join(ok, 'kept'), path.join(ok, 'bodies', 'sha256', hex));
    fs.writeFileSync(path.join(ok, 'blob.md'), f);
    expect((await loadFixtures([ok])).exchanges).toHaveLength(1);
  });
});
