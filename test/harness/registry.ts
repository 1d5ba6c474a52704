// docker-registry (Debian's distribution 2.8.2) on a free loopback port, in one of five modes:
//   plain    no auth
//   basic    htpasswd (bcrypt) Basic auth, realm "regtape-basic"; every user may push (htpasswd has no ACL)
//   token    Docker-Hub-style Bearer auth against an in-process token server (token-server.ts)
//   redirect blob GET/HEAD answer 307 to an in-process static server over the storage dir (blob-cdn.ts)
//   hub      token + redirect
import * as fs from 'fs';
import * as path from 'path';
import { BlobCdn, startBlobCdn } from './blob-cdn';
import { freePort, waitForPort } from './ports';
import { Procs } from './procs';
import { describeFailure, run } from './run';
import { defaultTempDirs, TempDirs } from './tmp';
import { startTokenServer, TokenServer, UserSpec } from './token-server';

export type RegistryMode = 'plain' | 'basic' | 'token' | 'redirect' | 'hub';
export type { UserSpec } from './token-server';

export interface RegistryOptions {
  mode: RegistryMode;
  /** default: alice/alicepw with pull+push, bob/bobpw with pull only (basic mode cannot restrict bob) */
  users?: Record<string, UserSpec>;
  /** token/hub: what anonymous token requests get (default ['pull']) */
  anonymousActions?: string[];
  /** token/hub: how the JWT header names its key (default 'kid') */
  keyRef?: 'kid' | 'x5c' | 'both';
  /** token/hub: RS256 (default) or ES256 */
  keyType?: 'rsa' | 'ec';
  /** token/hub: default 'registry.docker.io' / 'auth.docker.io' */
  service?: string;
  issuer?: string;
  /** registry log level (default info) */
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
  /** where the state dir is tracked (default: the process-wide tracker); it is removed by stop() anyway */
  tmp?: TempDirs;
  /** docker-registry binary (default $REGTAPE_REGISTRY_BIN or 'docker-registry') */
  binary?: string;
  /** serve https with a self-signed certificate for 127.0.0.1 (its PEM is in `caCert`), or with this certificate and key (PEM files) */
  tls?: boolean | { cert: string; key: string };
  /**
   * serve https with a certificate for these names (DNS names or IPs; e.g. ['ghcr.io']) issued by a
   * throw-away CA made for this registry (its PEM is in `caCert`); clients reach it by name through
   * a proxy or regtape's --resolve. Implies tls.
   */
  tlsNames?: string[];
  /** token/hub: the realm named in challenges, when clients reach the token server by another name (default: its own URL) */
  realm?: string;
  /** redirect/hub: the base URL blob redirects point to, when clients reach the CDN by another name (default: its own URL) */
  cdnBaseUrl?: string;
}

export interface Registry {
  mode: RegistryMode;
  /** '127.0.0.1:PORT' */
  host: string;
  /** 'http://127.0.0.1:PORT' */
  url: string;
  port: number;
  /** PID of the docker-registry process */
  pid: number;
  /** the registry's filesystem storage root (blobs are under docker/registry/v2/blobs/) */
  dataDir: string;
  /** temp dir holding config.yml, htpasswd, token.crt, registry.log and dataDir; removed by stop() */
  stateDir: string;
  configPath: string;
  users: Record<string, UserSpec>;
  /** token/hub: the realm, 'http://127.0.0.1:TPORT/token' */
  tokenUrl?: string;
  /** token/hub */
  service?: string;
  issuer?: string;
  tokenServer?: TokenServer;
  /** redirect/hub: 'http://127.0.0.1:CPORT' (the redirect middleware's baseurl, without the slash) */
  cdnUrl?: string;
  cdn?: BlobCdn;
  /** tls: the self-signed certificate (PEM) the registry serves; tlsNames: the throw-away CA that issued its certificate */
  caCert?: string;
  /** the registry's stdout+stderr (last 200 lines) */
  logs(): string;
  /** stops the registry, the token server and the CDN, then removes stateDir; idempotent */
  stop(): Promise<void>;
}

export const DEFAULT_USERS: Readonly<Record<string, UserSpec>> = Object.freeze({
  alice: { password: 'alicepw', actions: ['pull', 'push'] },
  bob: { password: 'bobpw', actions: ['pull'] },
});

const HTTP_SECRET = 'regtape-fixed-http-secret';

const q = (s: string): string => JSON.stringify(s); // a JSON string is a valid YAML scalar

function registryConfig(port: number, dataDir: string, extra: string[], logLevel: string): string {
  return [
    'version: 0.1',
    'log:',
    `  level: ${logLevel}`,
    '  accesslog:',
    '    disabled: false',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${q(dataDir)}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: ${q(`127.0.0.1:${port}`)}`,
    `  secret: ${q(HTTP_SECRET)}`,
    ...extra,
    '',
  ].join('\n');
}

async function htpasswdFile(users: Record<string, UserSpec>): Promise<string> {
  const lines: string[] = [];
  for (const [name, u] of Object.entries(users)) {
    const r = await run('htpasswd', ['-Bbn', name, u.password], { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`htpasswd failed: ${describeFailure(r)}`);
    lines.push(r.stdout.trim());
  }
  return lines.join('\n') + '\n';
}

/** the environment without REGISTRY_* variables, which docker-registry would take as config overrides */
function registryEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('REGISTRY_')) env[k] = v;
  return env;
}

export async function startRegistry(opts: RegistryOptions): Promise<Registry> {
  const mode = opts.mode;
  if (!['plain', 'basic', 'token', 'redirect', 'hub'].includes(mode)) throw new Error(`startRegistry: unknown mode ${String(mode)}`);
  const users: Record<string, UserSpec> = opts.users ?? {
    alice: { ...DEFAULT_USERS.alice, actions: [...DEFAULT_USERS.alice.actions] },
    bob: { ...DEFAULT_USERS.bob, actions: [...DEFAULT_USERS.bob.actions] },
  };
  const tmp = opts.tmp ?? defaultTempDirs;
  const stateDir = tmp.make(`registry-${mode}`);
  const dataDir = path.join(stateDir, 'data');
  fs.mkdirSync(dataDir);
  const configPath = path.join(stateDir, 'config.yml');
  const procs = new Procs({ logDir: stateDir });
  procs.watchDir(stateDir); // removed by the watchdog if this process dies with the registry still running
  const useToken = mode === 'token' || mode === 'hub';
  const useCdn = mode === 'redirect' || mode === 'hub';
  let tokenServer: TokenServer | undefined;
  let cdn: BlobCdn | undefined;

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await procs.stopAll();
      await Promise.all([tokenServer?.close(), cdn?.close()]);
      tmp.remove(stateDir);
    })();
    return stopping;
  };

  try {
    const extra: string[] = [];
    let caCert: string | undefined;
    if (typeof opts.tls === 'object') {
      extra.push('  tls:', `    certificate: ${q(opts.tls.cert)}`, `    key: ${q(opts.tls.key)}`);
    } else if (opts.tlsNames?.length) {
      caCert = path.join(stateDir, 'test-ca.crt');
      const caKey = path.join(stateDir, 'test-ca.key');
      const crt = path.join(stateDir, 'tls.crt');
      const key = path.join(stateDir, 'tls.key');
      const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'];
      const ca = await run('openssl', ['req', '-x509', ...ec, '-subj', '/CN=regtape throw-away test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign', '-keyout', caKey, '-out', caCert]);
      if (ca.code !== 0) throw new Error(`openssl could not make a CA: ${ca.stderr}`);
      const san = opts.tlsNames.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
      const leaf = await run('openssl', ['req', '-x509', '-CA', caCert, '-CAkey', caKey, ...ec, '-subj', `/CN=${opts.tlsNames[0]}`, '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'extendedKeyUsage=serverAuth', '-addext', `subjectAltName=${san}`, '-keyout', key, '-out', crt]);
      if (leaf.code !== 0) throw new Error(`openssl could not make a certificate: ${leaf.stderr}`);
      fs.rmSync(caKey); // nothing needs it any more
      extra.push('  tls:', `    certificate: ${q(crt)}`, `    key: ${q(key)}`);
    } else if (opts.tls) {
      caCert = path.join(stateDir, 'tls.crt');
      const key = path.join(stateDir, 'tls.key');
      const r = await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', caCert]);
      if (r.code !== 0) throw new Error(`openssl could not make a certificate: ${r.stderr}`);
      // nested under `http:`, which registryConfig writes last before the extra lines
      extra.push('  tls:', `    certificate: ${q(caCert)}`, `    key: ${q(key)}`);
    }
    if (mode === 'basic') {
      const htpasswd = path.join(stateDir, 'htpasswd');
      fs.writeFileSync(htpasswd, await htpasswdFile(users));
      extra.push('auth:', '  htpasswd:', '    realm: regtape-basic', `    path: ${q(htpasswd)}`);
    }
    if (useToken) {
      tokenServer = await startTokenServer({
        users,
        anonymousActions: opts.anonymousActions,
        keyRef: opts.keyRef,
        keyType: opts.keyType,
        service: opts.service,
        issuer: opts.issuer,
      });
      const crt = path.join(stateDir, 'token.crt');
      fs.writeFileSync(crt, tokenServer.certPem);
      extra.push(
        'auth:',
        '  token:',
        `    realm: ${q(opts.realm ?? tokenServer.realm)}`,
        `    service: ${q(tokenServer.service)}`,
        `    issuer: ${q(tokenServer.issuer)}`,
        `    rootcertbundle: ${q(crt)}`,
      );
    }
    if (useCdn) {
      cdn = await startBlobCdn({ root: dataDir });
      extra.push('middleware:', '  storage:', '    - name: redirect', '      options:', `        baseurl: ${q(`${opts.cdnBaseUrl ?? cdn.url}/`)}`);
    }
    const bin = opts.binary ?? process.env.REGTAPE_REGISTRY_BIN ?? 'docker-registry';
    // freePort() can race with another process grabbing the port: retry a few times
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      fs.writeFileSync(configPath, registryConfig(port, dataDir, extra, opts.logLevel ?? 'info'));
      const child = procs.spawn('registry', bin, ['serve', configPath], { env: registryEnv(), cwd: stateDir });
      try {
        await waitForPort(port, 15_000, () => procs.exitError('registry'));
      } catch (e) {
        const logs = procs.logs('registry');
        await procs.stop('registry');
        if (attempt < 3 && /address already in use/.test(logs)) continue;
        throw e;
      }
      const host = `127.0.0.1:${port}`;
      return {
        mode,
        host,
        url: `${opts.tls || opts.tlsNames?.length ? 'https' : 'http'}://${host}`,
        caCert,
        port,
        pid: child.pid ?? -1,
        dataDir,
        stateDir,
        configPath,
        users,
        tokenUrl: tokenServer?.realm,
        service: tokenServer?.service,
        issuer: tokenServer?.issuer,
        tokenServer,
        cdnUrl: cdn?.url,
        cdn,
        logs: () => procs.logs('registry'),
        stop,
      };
    }
  } catch (e) {
    await stop();
    throw e;
  }
}
