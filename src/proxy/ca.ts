/**
 * regtape's own certificate authority: one CA per user (or per --ca-dir), created on first use, which
 * issues short-lived-enough leaf certificates for `--tls` servers and for the forward proxy's CONNECT
 * interception. Files in the CA folder: `ca.pem` (the certificate users make their clients trust) and
 * `ca.key` (PKCS#8 PEM, mode 0600). The private key is never logged and never leaves that folder.
 *
 * Issuance uses @peculiar/x509 on node's WebCrypto: node's crypto parses X.509 but cannot issue it.
 * @peculiar/x509 needs a Reflect metadata polyfill (tsyringe); it is loaded only when a CA is used.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { createPrivateKey, createPublicKey, randomBytes, webcrypto, X509Certificate as NodeX509 } from 'node:crypto';
import { UserError } from '../http/server';

type X509Lib = typeof import('@peculiar/x509');
// The library's types name DOM globals (Crypto, CryptoKey) that this project's lib setting leaves out;
// node's webcrypto objects are those at run time.
type LibCrypto = NonNullable<Parameters<X509Lib['X509CertificateGenerator']['create']>[1]>;
type LibKey = import('@peculiar/x509').X509CertificateCreateWithKeyParams['signingKey'];
type LibPair = import('@peculiar/x509').X509CertificateCreateSelfSignedParams['keys'];

export const CA_CERT_FILE = 'ca.pem';
export const CA_KEY_FILE = 'ca.key';

const DAY = 86_400_000;
const CA_DAYS = 3650;
const LEAF_DAYS = 365;
/** Leaf certificates kept in memory: a forward proxy meets a handful of hosts; this only bounds a misuse. */
const MAX_CACHED = 1000;
const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** `$REGTAPE_CA_DIR`, else `<user config dir>/regtape/ca` (`$XDG_CONFIG_HOME`, else `~/.config`). */
export function defaultCaDir(): string {
  const env = process.env.REGTAPE_CA_DIR;
  if (env) return path.resolve(env);
  const xdg = process.env.XDG_CONFIG_HOME;
  // The XDG spec says relative values are to be ignored.
  const config = xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.config');
  return path.join(config, 'regtape', 'ca');
}

export interface CertificateAuthority {
  dir: string;
  /** PEM of the CA certificate: what clients must trust. */
  certPath: string;
  certPem: string;
  /** A certificate (PEM) + private key (PEM) for these names (DNS names and/or IP addresses), cached in memory per name set. */
  issue(names: string[]): Promise<{ cert: string; key: string }>;
  /** A tls.SecureContext for SNI callbacks, cached per host. */
  secureContextFor(host: string): Promise<tls.SecureContext>;
}

let lib: X509Lib | undefined;
function x509(): X509Lib {
  if (!lib) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require('reflect-metadata');
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    lib = require('@peculiar/x509') as X509Lib;
  }
  return lib;
}

const provider = webcrypto as unknown as LibCrypto;

/** Loads the CA in `dir` (default: defaultCaDir()), creating it first if there is none. */
export async function loadOrCreateCA(dir: string = defaultCaDir()): Promise<CertificateAuthority> {
  dir = path.resolve(dir);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw new UserError(`cannot create the CA folder ${dir} (${(e as NodeJS.ErrnoException).code}): pick another with --ca-dir or REGTAPE_CA_DIR`);
  }
  const certPath = path.join(dir, CA_CERT_FILE);
  const keyPath = path.join(dir, CA_KEY_FILE);
  const keyPem = readIfExists(keyPath) ?? (await createKey(dir, keyPath));
  const certPem = readIfExists(certPath) ?? (await createCert(dir, certPath, keyPem));
  return openCA(dir, certPath, certPem, keyPem);
}

function readIfExists(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UserError(`cannot read ${file} (${(e as NodeJS.ErrnoException).code}): check its permissions`);
  }
}

/**
 * Publishes `content` at `file` only if nothing is there yet: written to a temp file first, then
 * hard-linked (link fails if the name exists), so a reader never sees a partial file and two
 * processes creating the CA at once agree on one. Returns what is at `file` afterwards.
 */
function publishExclusive(dir: string, file: string, content: string, mode: number): string {
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fd = fs.openSync(tmp, 'wx', mode);
    try {
      fs.writeFileSync(fd, content);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.chmodSync(tmp, mode); // the umask may have taken bits off; 0600 must be exact, not looser
    try {
      fs.linkSync(tmp, file);
      return content;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      return fs.readFileSync(file, 'utf8'); // another process won the race: use its file
    }
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(`cannot write ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): check the permissions of ${dir}`);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

async function createKey(dir: string, keyPath: string): Promise<string> {
  const pair = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', pair.privateKey));
  return publishExclusive(dir, keyPath, toPem(der, 'PRIVATE KEY'), 0o600);
}

/** The CA certificate for an existing key (also repairs a folder where only the key was written). */
async function createCert(dir: string, certPath: string, keyPem: string): Promise<string> {
  const X = x509();
  const keys = await importPair(keyPem, certPath);
  const now = Date.now();
  const tag = randomBytes(4).toString('hex');
  const cert = await X.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: serial(),
      name: `CN=regtape CA ${tag}, O=regtape, OU=${escapeDn(os.hostname())}`,
      notBefore: new Date(now - DAY),
      notAfter: new Date(now + CA_DAYS * DAY),
      keys,
      signingAlgorithm: SIGN,
      extensions: [
        new X.BasicConstraintsExtension(true, 0, true),
        new X.KeyUsagesExtension(X.KeyUsageFlags.keyCertSign | X.KeyUsageFlags.cRLSign | X.KeyUsageFlags.digitalSignature, true),
        await X.SubjectKeyIdentifierExtension.create(keys.publicKey, false, provider),
      ],
    },
    provider,
  );
  return publishExclusive(dir, certPath, cert.toString('pem') + '\n', 0o644);
}

async function importPair(keyPem: string, where: string): Promise<LibPair> {
  let priv: ReturnType<typeof createPrivateKey>;
  try {
    priv = createPrivateKey(keyPem);
  } catch {
    throw new UserError(`${path.join(path.dirname(where), CA_KEY_FILE)} is not a private key in PEM: delete the CA folder ${path.dirname(where)} to make a new CA`);
  }
  if (priv.asymmetricKeyType !== 'ec') {
    throw new UserError(`${path.join(path.dirname(where), CA_KEY_FILE)} is not an EC P-256 key: delete the CA folder ${path.dirname(where)} to make a new CA`);
  }
  const pkcs8 = priv.export({ type: 'pkcs8', format: 'der' });
  const spki = createPublicKey(priv).export({ type: 'spki', format: 'der' });
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, EC, false, ['sign']);
  const publicKey = await webcrypto.subtle.importKey('spki', spki, EC, true, ['verify']);
  return { privateKey, publicKey } as unknown as LibPair;
}

async function openCA(dir: string, certPath: string, certPem: string, keyPem: string): Promise<CertificateAuthority> {
  let caCert: NodeX509;
  try {
    caCert = new NodeX509(certPem);
  } catch {
    throw new UserError(`${certPath} is not a certificate in PEM: delete the CA folder ${dir} to make a new CA`);
  }
  const caKeys = await importPair(keyPem, certPath);
  if (!caCert.checkPrivateKey(createPrivateKey(keyPem))) {
    throw new UserError(`${certPath} does not belong to ${path.join(dir, CA_KEY_FILE)}: delete the CA folder ${dir} to make a new CA`);
  }
  const caNotAfter = new Date(caCert.validTo);
  if (caNotAfter.getTime() <= Date.now() + DAY) {
    throw new UserError(`the regtape CA in ${dir} expires ${caCert.validTo}: delete the folder to make a new one (and trust the new ${CA_CERT_FILE})`);
  }

  const X = x509();
  const caX = new X.X509Certificate(certPem);
  const aki = await X.AuthorityKeyIdentifierExtension.create(caX, false, provider);

  // One leaf key pair per CA instance (process): generating a key per host buys nothing here.
  type LeafKey = { pair: webcrypto.CryptoKeyPair; pem: string; ski: InstanceType<X509Lib['SubjectKeyIdentifierExtension']> };
  let leafKeys: Promise<LeafKey> | undefined;
  const leafKey = (): Promise<LeafKey> =>
    (leafKeys ??= (async () => {
      const pair = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', pair.privateKey));
      const ski = await X.SubjectKeyIdentifierExtension.create(pair.publicKey as unknown as LibKey, false, provider);
      return { pair, pem: toPem(der, 'PRIVATE KEY'), ski };
    })());

  const issued = new BoundedCache<Promise<{ cert: string; key: string }>>(MAX_CACHED);
  const contexts = new BoundedCache<Promise<tls.SecureContext>>(MAX_CACHED);

  async function make(names: string[]): Promise<{ cert: string; key: string }> {
    const { pair, pem, ski } = await leafKey();
    const now = Date.now();
    const notAfter = Math.min(now + LEAF_DAYS * DAY, caNotAfter.getTime());
    const first = names.find((n) => !net.isIP(n) && n.length <= 64) ?? names.find((n) => n.length <= 64) ?? 'regtape';
    const cert = await X.X509CertificateGenerator.create(
      {
        serialNumber: serial(),
        subject: `CN=${escapeDn(first)}, O=regtape`,
        issuer: caX.subject,
        notBefore: new Date(now - DAY),
        notAfter: new Date(notAfter),
        publicKey: pair.publicKey as unknown as LibKey,
        signingKey: caKeys.privateKey,
        signingAlgorithm: SIGN,
        extensions: [
          new X.BasicConstraintsExtension(false, undefined, true),
          new X.KeyUsagesExtension(X.KeyUsageFlags.digitalSignature, true),
          new X.ExtendedKeyUsageExtension([X.ExtendedKeyUsage.serverAuth]),
          new X.SubjectAlternativeNameExtension(
            names.map((n) => ({ type: net.isIP(n) ? ('ip' as const) : ('dns' as const), value: n })),
            false,
          ),
          ski,
          aki,
        ],
      },
      provider,
    );
    return { cert: cert.toString('pem') + '\n', key: pem };
  }

  const ca: CertificateAuthority = {
    dir,
    certPath,
    certPem,
    async issue(names: string[]): Promise<{ cert: string; key: string }> {
      const list = normalizeNames(names);
      const id = list.join(',');
      let p = issued.get(id);
      if (!p) {
        p = make(list);
        issued.set(id, p);
        p.catch(() => issued.delete(id)); // a failure is not cached
      }
      return p;
    },
    async secureContextFor(host: string): Promise<tls.SecureContext> {
      const [name] = normalizeNames([host]);
      let p = contexts.get(name);
      if (!p) {
        p = ca.issue([name]).then(({ cert, key }) => tls.createSecureContext({ cert, key }));
        contexts.set(name, p);
        p.catch(() => contexts.delete(name));
      }
      return p;
    },
  };
  return ca;
}

/** Lower-cased, brackets off IPv6 literals, no duplicates, in a stable order (the cache key). */
export function normalizeNames(names: string[]): string[] {
  const out = new Set<string>();
  for (const raw of names) {
    let n = raw.trim().toLowerCase();
    if (n.startsWith('[') && n.endsWith(']')) n = n.slice(1, -1);
    if (n.endsWith('.') && !net.isIP(n)) n = n.slice(0, -1);
    if (!n) continue;
    if (!net.isIP(n) && !/^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$/.test(n)) {
      throw new UserError(`${JSON.stringify(raw)} is not a host name or an IP address: a certificate cannot name it`);
    }
    out.add(n);
  }
  if (out.size === 0) throw new UserError('a certificate needs at least one host name or IP address');
  return [...out].sort();
}

/** Insertion-ordered map that forgets its oldest entry past `max` (touching an entry makes it young). */
class BoundedCache<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly max: number) {}
  get(k: string): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    this.map.set(k, v);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as string);
  }
  delete(k: string): void {
    this.map.delete(k);
  }
}

/** 16 random bytes, positive (RFC 5280: at most 20 octets, non-negative). */
function serial(): string {
  const b = randomBytes(16);
  b[0] = (b[0] & 0x7f) | 0x01;
  return b.toString('hex');
}

function escapeDn(s: string): string {
  return s.replace(/[,+"\\<>;=#]/g, (c) => `\\${c}`);
}

function toPem(der: Buffer, label: string): string {
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}-----END ${label}-----\n`;
}

/** How a registry port serves TLS (`--tls`): from regtape's CA, or from the user's own files. */
export interface ServeTlsOptions {
  /** Names besides 127.0.0.1, ::1 and localhost (and the listening address) that the certificate from the CA covers (`--tls-name`). */
  names?: string[];
  /** The CA folder (default defaultCaDir()). */
  caDir?: string;
  /** The user's certificate (PEM, may hold the chain) and key (`--tls-cert`, `--tls-key`): used as they are. */
  certFile?: string;
  keyFile?: string;
}

/** The certificate and key a `--tls` server presents; `caCertPath` is what clients must trust when it comes from regtape's CA. */
export async function serverTls(opts: ServeTlsOptions, listenHost: string): Promise<{ cert: string; key: string; names: string[]; caCertPath?: string }> {
  if (opts.certFile || opts.keyFile) {
    if (!opts.certFile || !opts.keyFile) throw new UserError(opts.certFile ? '--tls-cert needs --tls-key (the private key of that certificate)' : '--tls-key needs --tls-cert (the certificate of that key)');
    if (opts.names?.length) throw new UserError('--tls-name has no effect with --tls-cert: the names are those of your certificate');
    const read = (flag: string, file: string): string => {
      try {
        return fs.readFileSync(file, 'utf8');
      } catch (e) {
        throw new UserError(`${flag} ${file}: cannot read it (${(e as NodeJS.ErrnoException).code})`);
      }
    };
    const cert = read('--tls-cert', opts.certFile);
    const key = read('--tls-key', opts.keyFile);
    let leaf: NodeX509;
    try {
      leaf = new NodeX509(cert);
    } catch {
      throw new UserError(`--tls-cert ${opts.certFile}: not a certificate in PEM (-----BEGIN CERTIFICATE-----)`);
    }
    let priv: ReturnType<typeof createPrivateKey>;
    try {
      priv = createPrivateKey(key);
    } catch {
      throw new UserError(`--tls-key ${opts.keyFile}: not an unencrypted private key in PEM`);
    }
    if (!leaf.checkPrivateKey(priv)) throw new UserError(`--tls-key ${opts.keyFile} is not the key of the certificate in ${opts.certFile}`);
    if (Date.parse(leaf.validTo) < Date.now()) throw new UserError(`--tls-cert ${opts.certFile} expired on ${leaf.validTo}`);
    const names = (leaf.subjectAltName ?? '').split(', ').map((s) => s.replace(/^(DNS|IP Address):/, '')).filter(Boolean);
    return { cert, key, names };
  }
  const ca = await loadOrCreateCA(opts.caDir);
  const wildcard = ['0.0.0.0', '::', ''].includes(listenHost);
  const names = normalizeNames(['127.0.0.1', '::1', 'localhost', ...(wildcard ? [] : [listenHost]), ...(opts.names ?? [])]);
  const { cert, key } = await ca.issue(names);
  return { cert, key, names, caCertPath: ca.certPath };
}
