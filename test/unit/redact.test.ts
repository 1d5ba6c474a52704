import { credentialsIn, REDACTED, Redactor } from '../../src/record/redact';
import { freshTokenResponse, rewriteChallengeRealm, tokenRequestKey, unparsedTokenAnswer } from '../../src/registry/auth';

describe('Redactor', () => {
  const r = new Redactor({ headers: ['x-api-key'], query: ['secret'], fields: ['apiKey'] });

  it('headers: credentials keep only their scheme; cookies, the client IP and extra headers go', () => {
    expect(
      r.redactHeaders([
        ['Authorization', 'Bearer eyJabc.def.ghi'],
        ['authorization', 'Basic YWxpY2U6YWxpY2Vwdw=='],
        ['cookie', 'a=b'],
        ['set-cookie', '__cfduid=x; path=/'],
        ['docker-ratelimit-source', '203.0.113.9'],
        ['x-api-key', 'k'],
        ['accept', 'application/json'],
      ]),
    ).toEqual([
      ['Authorization', `Bearer ${REDACTED}`],
      ['authorization', `Basic ${REDACTED}`],
      ['cookie', REDACTED],
      ['set-cookie', REDACTED],
      ['docker-ratelimit-source', REDACTED],
      ['x-api-key', REDACTED],
      ['accept', 'application/json'],
    ]);
  });

  it('URLs: account names, signatures and extra parameters; the rest untouched, in order', () => {
    expect(r.redactUrl('/t?scope=repository%3Aa%3Apull&account=bob&service=s&secret=1')).toBe('/t?scope=repository%3Aa%3Apull&account=%3Credacted%3E&service=s&secret=%3Credacted%3E');
    expect(r.redactUrl('/data?X-Amz-Signature=abc&X-Amz-Date=1&verify=123-sig')).toBe('/data?X-Amz-Signature=%3Credacted%3E&X-Amz-Date=1&verify=%3Credacted%3E');
    expect(r.redactUrl('/v2/')).toBe('/v2/');
  });

  it('token POST forms: passwords, refresh tokens, user names', () => {
    expect(r.redactForm('grant_type=refresh_token&refresh_token=r1&client_id=docker&scope=a+b')).toBe('grant_type=refresh_token&refresh_token=%3Credacted%3E&client_id=docker&scope=a+b');
    expect(r.redactForm('grant_type=password&username=alice&password=p%40ss&apiKey=1')).toBe('grant_type=password&username=%3Credacted%3E&password=%3Credacted%3E&apiKey=%3Credacted%3E');
  });

  it('token responses: only the secret values change, byte for byte otherwise', () => {
    const body = '{"token":"t1",  "access_token":"t1","refresh_token":"r9","expires_in":300,"nested":{"apiKey":"k"}}\n';
    expect(r.redactJson(body)).toBe('{"token":"<redacted>",  "access_token":"<redacted>","refresh_token":"<redacted>","expires_in":300,"nested":{"apiKey":"<redacted>"}}\n');
    expect(r.redactJson('not json')).toBe(unparsedTokenAnswer(8));
  });

  it('the last line of defence finds JWTs and the credentials this client sent, wherever they are', () => {
    const creds = credentialsIn([['authorization', 'Basic ' + Buffer.from('bob:s3cret!').toString('base64')]]);
    expect(creds).toContain('s3cret!');
    const jwt = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln';
    const out = r.scrub(`x ${jwt} y s3cret! z ${Buffer.from('bob:s3cret!').toString('base64')}`, creds);
    expect(out.text).toBe(`x ${REDACTED} y ${REDACTED} z ${REDACTED}`);
    expect(out.hits).toBe(3);
  });
});

describe('token answers fail closed', () => {
  const r = new Redactor();
  const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IiLCJqdGkiOiJhLWIifQ.sig-na_ture/x';
  const leaks = (out: string): string[] =>
    [TOKEN, JSON.stringify(TOKEN).slice(1, -1).replace(/\//g, '\\/'), 'sig-na_ture', 'sig\\u002dna_ture', 'opaque-refresh-1234', 'ghp_abcdefghijklmnop'].filter((s) => out.includes(s));

  it.each([
    ['escaped slashes', JSON.stringify({ token: TOKEN, expires_in: 300 }).replace(/\//g, '\\/')],
    ['\\u escapes', JSON.stringify({ token: TOKEN }).replace(/-/g, '\\u002d')],
    ['a BOM', '\uFEFF' + JSON.stringify({ token: TOKEN, expires_in: 60 })],
    ['accessToken', JSON.stringify({ accessToken: TOKEN, expiresIn: 60 })],
    ['id_token and refresh_token', JSON.stringify({ id_token: TOKEN, refresh_token: 'opaque-refresh-1234', token_type: 'Bearer' })],
    ['an unknown field', JSON.stringify({ data: { credential: 'ghp_abcdefghijklmnop', opaque: 'ghp_abcdefghijklmnop' } })],
    ['text/plain', TOKEN],
    ['a form', `access_token=${encodeURIComponent(TOKEN)}&expires_in=60&refresh_token=opaque-refresh-1234`],
    ['HTML', `<html><body>${TOKEN}</body></html>`],
    ['cut JSON', JSON.stringify({ token: TOKEN }).slice(0, 40) + '...'],
    ['a large JSON', JSON.stringify({ token: TOKEN, pad: 'x'.repeat(200_000) })],
  ])('%s: no secret left', (_what, body) => {
    const out = r.redactTokenAnswer(body);
    expect(leaks(out)).toEqual([]);
  });

  it('what it understands stays byte for byte otherwise; public fields stay', () => {
    const body = '\uFEFF{"token":"a\\/b\\u002dc", "expires_in":300,"issued_at":"2026-01-01T00:00:00Z","token_type":"Bearer","scope":"repository:a:pull"}\n';
    expect(r.redactTokenAnswer(body)).toBe('\uFEFF{"token":"<redacted>", "expires_in":300,"issued_at":"2026-01-01T00:00:00Z","token_type":"Bearer","scope":"repository:a:pull"}\n');
    expect(r.redactTokenAnswer('{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials","detail":null}]}')).toBe('{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials","detail":null}]}');
  });

  it('replay answers every such fixture with a usable placeholder token', () => {
    for (const recorded of [r.redactTokenAnswer(TOKEN), r.redactTokenAnswer(JSON.stringify({ accessToken: TOKEN })), r.redactTokenAnswer('\uFEFF' + JSON.stringify({ token: TOKEN }))]) {
      const fresh = JSON.parse(freshTokenResponse(recorded)!) as Record<string, unknown>;
      expect(Object.values(fresh)).toContain('regtape-replay-token');
      expect(fresh.expires_in).toBe(86400);
    }
    expect(JSON.parse(freshTokenResponse(r.redactTokenAnswer(TOKEN))!).token).toBe('regtape-replay-token');
  });
});

describe('echoed credentials and URL signatures', () => {
  const r = new Redactor();
  it('every secret a request carried is found again, in any escaping', () => {
    const secrets = r.requestSecrets(
      [
        ['authorization', 'token ghp_abcdefghijklmnopqrstu'],
        ['cookie', 'session=cookie-secret-1; theme=dark'],
      ],
      '/v2/a/tags/list?access_token=q%2Ftoken-123456&n=1&account=alice-long-name',
      'grant_type=password&username=bob&password=pw%2F123456',
    );
    expect(secrets).toEqual(expect.arrayContaining(['ghp_abcdefghijklmnopqrstu', 'cookie-secret-1', 'q/token-123456', 'q%2Ftoken-123456', 'q\\/token-123456', 'pw/123456']));
    expect(secrets).not.toContain('alice-long-name'); // a user name is also a repository name: redacted where named only
    expect(credentialsIn([['authorization', 'opaque-no-scheme-token']])).toEqual(['opaque-no-scheme-token']);
    const out = r.scrub('{"errors":[{"message":"token ghp_abcdefghijklmnopqrstu is invalid"}]} error_description="q/token-123456 expired"', secrets);
    expect(out.text).not.toMatch(/ghp_|q\/token/);
  });

  it('signatures in the HTML of a redirect, in Link and Content-Location, with &amp; too', () => {
    const html = '<a href="https://cdn.quay.io/blob?Signature=abc123&amp;Expires=1&amp;Key-Pair-Id=K1">Found</a>.';
    expect(r.redactUrlsIn(html)).toBe('<a href="https://cdn.quay.io/blob?Signature=%3Credacted%3E&amp;Expires=1&amp;Key-Pair-Id=%3Credacted%3E">Found</a>.');
    expect(
      r.redactHeaderUrls([
        ['Link', '</v2/_catalog?last=a&n=1&X-Amz-Signature=s1>; rel="next"'],
        ['Content-Location', 'https://cdn/x?sig=s2&se=1'],
      ]),
    ).toEqual([
      ['Link', '</v2/_catalog?last=a&n=1&X-Amz-Signature=%3Credacted%3E>; rel="next"'],
      ['Content-Location', 'https://cdn/x?sig=%3Credacted%3E&se=1'],
    ]);
  });
});

describe('registry auth helpers', () => {
  it('rewrites only the realm of a Bearer challenge', () => {
    expect(rewriteChallengeRealm('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a:pull",error="insufficient_scope"', 'http://127.0.0.1:9'))
      .toBe('Bearer realm="http://127.0.0.1:9/__regtape/token/https/auth.docker.io/token",service="registry.docker.io",scope="repository:a:pull",error="insufficient_scope"');
    expect(rewriteChallengeRealm('Bearer realm=https://gcr.io/v2/token,service=gcr.io', 'http://h')).toBe('Bearer realm="http://h/__regtape/token/https/gcr.io/v2/token",service=gcr.io');
    expect(rewriteChallengeRealm('Basic realm="regtape-basic"', 'http://h')).toBe('Basic realm="regtape-basic"');
  });

  it('identifies token requests by realm, service and the set of scopes only', () => {
    const a = tokenRequestKey('/__regtape/token/https/x/token', 'scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull&service=s&account=bob&client_id=docker', undefined);
    const b = tokenRequestKey('/__regtape/token/https/x/token', 'service=s&scope=repository%3Ab%3Apull&scope=repository%3Aa%3Apull', undefined);
    const c = tokenRequestKey('/__regtape/token/https/x/token', '', 'grant_type=password&service=s&scope=repository%3Aa%3Apull+repository%3Ab%3Apull&password=p');
    expect(a).toBe(b);
    expect(c).toBe(a);
    expect(tokenRequestKey('/__regtape/token/https/x/token', 'service=s&scope=repository%3Aa%3Apush', undefined)).not.toBe(a);
  });

  it('a replayed token response is issued now, long-lived, with placeholder tokens', () => {
    const now = new Date('2030-01-01T00:00:00Z');
    const out = JSON.parse(freshTokenResponse('{"token":"<redacted>","expires_in":60,"issued_at":"2020-01-01T00:00:00Z","refresh_token":"<redacted>"}', now)!);
    expect(out).toEqual({ token: 'regtape-replay-token', refresh_token: 'regtape-replay-token', expires_in: 86400, issued_at: '2030-01-01T00:00:00.000Z' });
    expect(freshTokenResponse('{"errors":[]}')).toBeUndefined();
  });
});
