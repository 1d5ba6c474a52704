// Items: token answers fail closed; credentials the request carried are scrubbed wherever the
// answer echoes them; URL signatures in redirect bodies, Link and Content-Location; clean logs.
// A real docker-registry with Bearer auth whose token server answers in other shapes, real skopeo
// pulls through record and replay; a scripted upstream for what docker-registry never sends (echoes,
// Quay-style redirect HTML); the CLI's stderr for the log lines.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { record, replay } from '../../src';
import { checkDirImage, Harness, Image, pushImage, Registry } from '../harness';
import { CliProcess } from '../support/cli';
import { FakeUpstream, json } from '../support/fake-upstream';
import { get } from '../support/reliability';
import { findSecrets } from '../support/secrets';

jest.setTimeout(180_000);

/** A token as it could be written in JSON: raw, with `\/`, with `\u002d`, and its signature alone. */
const forms = (t: string): string[] => [t, t.replace(/\//g, '\\/'), t.replace(/-/g, '\\u002d'), t.split('.').pop()!.slice(0, 24)];

describe('token answers in shapes the redactor must not trust', () => {
  const h = new Harness();
  let reg: Registry;
  let image: Image;
  const issued: string[] = [];
  let fixtures: string;
  const shapes: Array<[string, (f: Record<string, string | number>) => { contentType: string; text: string }]> = [
    ['BOM', (f) => ({ contentType: 'application/json', text: '\uFEFF' + JSON.stringify(f) })],
    ['text/plain', (f) => ({ contentType: 'text/plain', text: String(f.token) })],
    ['form', (f) => ({ contentType: 'application/x-www-form-urlencoded', text: `access_token=${f.token}&expires_in=300` })],
    ['accessToken', (f) => ({ contentType: 'application/json', text: JSON.stringify({ accessToken: f.token, expiresIn: 300 }) })],
    ['large', (f) => ({ contentType: 'application/json', text: JSON.stringify({ ...f, padding: 'x'.repeat(100_000) }) })],
  ];

  beforeAll(async () => {
    reg = await h.startRegistry({ mode: 'token' });
    image = await h.makeImage({ layers: 1, layerSize: 64 * 1024 });
    await pushImage(image, `${reg.host}/test/shapes:v1`, 'alice:alicepw');
    fixtures = h.tempDir('fixtures');
  });
  afterAll(() => h.cleanup());

  it.each(shapes.map(([n]) => [n]))('a %s token answer is stored with its secret replaced, and replay serves a placeholder token for it', async (name) => {
    const shape = shapes.find(([n]) => n === name)![1];
    const dir = h.tempDir(`shape-${name}`);
    const mine: string[] = [];
    reg.tokenServer!.shape = (f) => {
      mine.push(String(f.token));
      return shape(f);
    };
    const rec = await record({ upstream: reg.url, out: dir, port: 0, log: () => undefined });
    let realm = '';
    try {
      const ping = await get(`${rec.url}/v2/`);
      realm = /realm="([^"]+)"/.exec(String(ping.headers['www-authenticate']))![1];
      const live = await get(`${realm}?service=registry.docker.io&scope=repository%3Atest%2Fshapes%3Apull`, { headers: { authorization: 'Basic ' + Buffer.from('bob:bobpw').toString('base64') } });
      expect(live.status).toBe(200);
      expect(live.body.toString()).toContain(mine[0]); // the client got the real answer
    } finally {
      await rec.close();
      reg.tokenServer!.shape = undefined;
    }
    expect(findSecrets(dir, [...mine.flatMap(forms), 'bobpw'])).toEqual([]);
    const server = await replay({ fixtures: dir, port: 0 });
    try {
      const path_ = new URL(realm).pathname.replace(/\/127\.0\.0\.1:\d+\//, '/127.0.0.1/');
      const r = await get(`${server.url}${path_}?service=registry.docker.io&scope=repository%3Atest%2Fshapes%3Apull`);
      expect(r.status).toBe(200);
      expect(String(r.headers['content-type'])).toMatch(/json|x-www-form-urlencoded/);
      const text = r.body.toString();
      if (name === 'form') expect(text).toContain('access_token=');
      else expect(Object.values(JSON.parse(text.replace(/^\uFEFF/, '')) as Record<string, unknown>)).toContain('regtape-replay-token');
    } finally {
      await server.close();
    }
  });
  it('records a real pull whose tokens come escaped (\\/, \\u002d) and under id_token/accessToken too; none is written; replay pulls offline', async () => {
    reg.tokenServer!.shape = (f) => {
      issued.push(String(f.token));
      // Only the token strings escaped: Go's time parser does not take escapes in issued_at.
      const escaped = `"${String(f.token).replace(/-/g, '\\u002d').replace(/\//g, '\\/')}"`;
      const text = JSON.stringify({ ...f, id_token: f.token, accessToken: f.token, refresh_token: 'opaque-refresh-0123456789' }).split(JSON.stringify(f.token)).join(escaped);
      return { contentType: 'application/json', text };
    };
    const rec = await record({ upstream: reg.url, out: fixtures, port: 0, log: () => undefined });
    try {
      checkDirImage((await h.pullToDir(`127.0.0.1:${rec.port}/test/shapes:v1`, 'bob:bobpw')).dir);
    } finally {
      await rec.close();
    }
    reg.tokenServer!.shape = undefined;
    expect(issued.length).toBeGreaterThan(0);
    expect(findSecrets(fixtures, [...issued.flatMap(forms), 'opaque-refresh-0123456789', 'bobpw'])).toEqual([]);
    // The token fixture holds placeholders where the tokens were.
    const tokenFixture = fs.readdirSync(fixtures).find((f) => f.startsWith('GET_token_'))!;
    expect(fs.readFileSync(path.join(fixtures, tokenFixture), 'utf8')).toContain('"token":"<redacted>"');
    await reg.stop(); // registry and token server gone: replay alone
    const server = await replay({ fixtures, port: 0 });
    try {
      const pulled = await h.pullToDir(`127.0.0.1:${server.port}/test/shapes:v1`, 'bob:bobpw');
      expect(checkDirImage(pulled.dir).manifestDigest).toBe(image.manifestDigest);
      expect(pulled.manifestBytes.equals(image.manifestBytes)).toBe(true);
    } finally {
      await server.close();
    }
  });

});

describe('echoed credentials, signed URLs, and log lines', () => {
  let up: FakeUpstream;
  let fixtures: string;
  const h = new Harness();
  const OPAQUE = 'opaque-bearer-0123456789abcdef';
  const PAT = 'ghp_0123456789abcdefghijABCDEFGHIJ';
  const QUERY_TOKEN = 'query-token-9876543210';
  const SIG = 'quay-signature-abcdef0123456789';
  const LINK_SIG = 'link-signature-0123456789';
  const secrets = [OPAQUE, PAT, QUERY_TOKEN, SIG, LINK_SIG];

  beforeAll(async () => {
    fixtures = h.tempDir('echo');
    up = await FakeUpstream.start();
    // A registry that echoes whatever credential it got, in the challenge and in the error body.
    const echo = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void => {
      const got = `${req.headers.authorization ?? ''} ${new URL(req.url ?? '/', 'http://x').searchParams.get('access_token') ?? ''}`;
      const body = JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: `credential ${got} is not valid`, detail: null }] });
      res.writeHead(401, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'www-authenticate': `Bearer realm="${up.url}/token",service="fake",error="invalid_token",error_description="token ${got} expired"`,
      });
      res.end(body);
    };
    up.on('GET', '/v2/echo/manifests/bearer', echo);
    up.on('GET', '/v2/echo/manifests/pat', echo);
    up.on('GET', '/v2/echo/manifests/basic', echo);
    up.on('GET', `/v2/echo/manifests/query?access_token=${QUERY_TOKEN}`, echo);
    // Quay answers a blob GET with a redirect whose HTML body repeats the signed URL.
    up.on('GET', '/v2/echo/blobs/sha256:' + 'a'.repeat(64), (_req, res) => {
      const signed = `https://cdn.quay.invalid/blob?Signature=${SIG}&Expires=1999999999&Key-Pair-Id=K2`;
      const html = `<a href="${signed.replace(/&/g, '&amp;')}">Found</a>.\n`;
      res.writeHead(302, { location: signed, 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html) });
      res.end(html);
    });
    up.on('GET', '/v2/_catalog?n=1', (_req, res) => {
      res.setHeader('link', `</v2/_catalog?last=a&n=1&X-Amz-Signature=${LINK_SIG}>; rel="next"`);
      res.setHeader('content-location', `https://cdn.invalid/catalog?sig=${LINK_SIG}&se=1`);
      json(res, 200, '{"repositories":["a"]}');
    });
  });
  afterAll(async () => {
    await up?.close();
    await h.cleanup();
  });

  it('no echoed token, PAT, query token or signature in any fixture, nor in a line the recorder logged', async () => {
    const rec = new CliProcess(['record', '--upstream', up.url, '--port', '0', '--out', fixtures]);
    h.onCleanup(() => rec.stop('SIGKILL').then(() => undefined));
    const url = /on (http:\/\/\S+)/.exec(await rec.firstLine())![1];
    const answers = [
      await get(`${url}/v2/echo/manifests/bearer`, { headers: { authorization: `Bearer ${OPAQUE}` } }),
      await get(`${url}/v2/echo/manifests/pat`, { headers: { authorization: `token ${PAT}` } }),
      await get(`${url}/v2/echo/manifests/basic`, { headers: { authorization: 'Basic ' + Buffer.from(`ci-bot:${PAT}`).toString('base64') } }),
      await get(`${url}/v2/echo/manifests/query?access_token=${QUERY_TOKEN}`),
      await get(`${url}/v2/echo/blobs/sha256:${'a'.repeat(64)}`),
      await get(`${url}/v2/_catalog?n=1`),
    ];
    // The client saw the echoes live (the upstream really sent them) ...
    expect(answers[0].body.toString()).toContain(OPAQUE);
    expect(String(answers[1].headers['www-authenticate'])).toContain(PAT);
    expect(answers[4].body.toString()).toContain(SIG);
    // ... an upstream that fails mid-request is logged without the query token.
    await get(`${url}/v2/echo/manifests/gone?token=${QUERY_TOKEN}`, { headers: { authorization: `Bearer ${OPAQUE}` } });
    expect(await rec.stop('SIGTERM')).toBe(0);
    expect(rec.stderr.split('\n').filter((l) => / -> /.test(l)).length).toBe(7);
    expect(findSecrets(fixtures, secrets)).toEqual([]);
    expect(secrets.filter((s) => rec.stderr.includes(s) || rec.stdout.includes(s))).toEqual([]);
    // What was redacted is visible as such.
    const all = fs.readdirSync(fixtures).filter((f) => f.endsWith('.md')).map((f) => fs.readFileSync(path.join(fixtures, f), 'utf8')).join('\n');
    expect(all).toContain('Signature=%3Credacted%3E&amp;Expires=1999999999');
    expect(all).toContain('X-Amz-Signature=%3Credacted%3E');
    expect(all).toMatch(/error_description="token (Bearer|token) <redacted>/);
  });

  it('replay logs, the control API and the summary never show a query token', async () => {
    const cli = new CliProcess(['replay', fixtures, '--port', '0']);
    h.onCleanup(() => cli.stop('SIGKILL').then(() => undefined));
    const url = /on (http:\/\/\S+)/.exec(await cli.firstLine())![1];
    expect((await get(`${url}/v2/echo/manifests/query?access_token=${QUERY_TOKEN}`)).status).toBe(401);
    const miss = await get(`${url}/v2/echo/manifests/nothing?access_token=${QUERY_TOKEN}&X-Amz-Signature=${SIG}`, { headers: { authorization: 'Bearer x' } });
    expect(miss.status).toBe(404);
    const recent = await get(`${url}/__regtape/requests`);
    expect(recent.status).toBe(200);
    expect(secrets.filter((s) => recent.body.toString().includes(s))).toEqual([]);
    expect(recent.body.toString()).toContain('access_token=%3Credacted%3E');
    expect(await cli.stop('SIGTERM')).toBe(0);
    expect(cli.stderr).toContain('regtape: unmatched GET /v2/echo/manifests/nothing?access_token=%3Credacted%3E');
    expect(secrets.filter((s) => cli.stderr.includes(s))).toEqual([]);
  });
});
