import { challengeRealm, hostKey, isHostKey, isLoopback, parseAuthority, Realms } from '../../src/proxy/hosts';

describe('forward proxy hosts', () => {
  it('names host folders: the port only when it is not 443, IPv6 in brackets', () => {
    expect(hostKey('GHCR.io', 443)).toBe('ghcr.io');
    expect(hostKey('registry.local', 5000)).toBe('registry.local:5000');
    expect(hostKey('::1', 5000)).toBe('[::1]:5000');
    expect(isHostKey('ghcr.io')).toBe(true);
    expect(isHostKey('registry.local:5000')).toBe(true);
    expect(isHostKey('[::1]:5000')).toBe(true);
    expect(isHostKey('GET_v2.1234abcd.md')).toBe(false);
    expect(isHostKey('..')).toBe(false);
  });

  it('parses CONNECT authorities and refuses anything else', () => {
    expect(parseAuthority('ghcr.io:443')).toEqual({ host: 'ghcr.io', port: 443 });
    expect(parseAuthority('[::1]:8443')).toEqual({ host: '::1', port: 8443 });
    expect(parseAuthority('ghcr.io')).toBeUndefined();
    expect(parseAuthority('ghcr.io:0')).toBeUndefined();
    expect(parseAuthority('ghcr.io:70000')).toBeUndefined();
    expect(parseAuthority('a/b:443')).toBeUndefined();
  });

  it('learns token endpoints from Bearer challenges', () => {
    expect(challengeRealm('Bearer realm="https://auth.docker.io/token",service="registry.docker.io"')?.href).toBe('https://auth.docker.io/token');
    expect(challengeRealm('Basic realm="x"')).toBeUndefined();
    const r = new Realms();
    r.learn([['www-authenticate', 'Bearer realm="https://auth.docker.io/token",service="registry.docker.io"'], ['content-type', 'application/json']]);
    r.learn([['WWW-Authenticate', 'Bearer realm=https://registry.local:5000/oauth/token']]);
    expect(r.isToken('auth.docker.io', '/token?scope=repository%3Ax%3Apull')).toBe(true);
    expect(r.isToken('auth.docker.io', '/v2/')).toBe(false);
    expect(r.isToken('registry.local:5000', '/oauth/token')).toBe(true);
    expect(r.isToken('ghcr.io', '/token')).toBe(false);
  });

  it('learns redirect targets (CDN blob URLs) from 3xx Locations, without their query', () => {
    const r = new Realms();
    r.learnRedirect(307, [['location', 'https://production.cloudflare.docker.com/registry-v2/docker/registry/v2/blobs/sha256/ab/abcd/data?verify=1-x']], 'https://registry-1.docker.io');
    r.learnRedirect(200, [['location', 'https://elsewhere.example/x']], 'https://registry-1.docker.io');
    r.learnRedirect(302, [['location', '/v2/relative/path']], 'https://registry.local:5000');
    expect(r.isRedirectTarget('production.cloudflare.docker.com', '/registry-v2/docker/registry/v2/blobs/sha256/ab/abcd/data?verify=2-y')).toBe(true);
    expect(r.isRedirectTarget('elsewhere.example', '/x')).toBe(false);
    expect(r.isRedirectTarget('registry.local:5000', '/v2/relative/path')).toBe(true);
    expect(r.isRedirectTarget('production.cloudflare.docker.com', '/token')).toBe(false);
  });
});

describe('listening address', () => {
  it('knows loopback addresses', () => {
    expect(isLoopback('127.0.0.1')).toBe(true);
    expect(isLoopback('::1')).toBe(true);
    expect(isLoopback('0.0.0.0')).toBe(false);
  });
});
