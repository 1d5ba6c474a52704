import { credentialsIn, REDACTED, Redactor } from '../../src/record/redact';
import { freshTokenResponse, rewriteChallengeRealm, tokenRequestKey } from '../../src/registry/auth';

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
    expect(r.redactJson('not json')).toBe('not json');
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
