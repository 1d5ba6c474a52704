// regtape's CA: files and modes, the certificates it issues (names, SANs, chain, validity), caching,
// and two creators racing for one folder.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { AddressInfo } from 'node:net';
import { loadOrCreateCA, defaultCaDir, normalizeNames, CertificateAuthority } from '../../src/proxy/ca';

jest.setTimeout(60_000);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-ca-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('loadOrCreateCA', () => {
  let ca: CertificateAuthority;
  const dir = path.join(tmp, 'one', 'ca');
  beforeAll(async () => {
    ca = await loadOrCreateCA(dir);
  });

  it('creates ca.pem and a 0600 ca.key in a 0700 folder, and loads the same CA again', async () => {
    expect(ca.certPath).toBe(path.join(dir, 'ca.pem'));
    expect(fs.readFileSync(ca.certPath, 'utf8')).toBe(ca.certPem);
    expect(fs.statSync(path.join(dir, 'ca.key')).mode & 0o777).toBe(0o600);
    expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
    expect(fs.readdirSync(dir).sort()).toEqual(['ca.key', 'ca.pem']); // no temp files left
    const cert = new X509Certificate(ca.certPem);
    expect(cert.ca).toBe(true);
    expect(cert.subject).toMatch(/CN=regtape CA [0-9a-f]{8}/);
    const years = (Date.parse(cert.validTo) - Date.now()) / (365 * 86_400_000);
    expect(years).toBeGreaterThan(9.9);
    expect(Date.parse(cert.validFrom)).toBeLessThan(Date.now() - 12 * 3600_000); // back-dated for skewed clocks

    const again = await loadOrCreateCA(dir);
    expect(again.certPem).toBe(ca.certPem);
  });

  it('issues a leaf for DNS names and IP addresses, chained to the CA, valid about a year', async () => {
    const { cert, key } = await ca.issue(['localhost', '127.0.0.1', '[::1]', 'Example.COM.']);
    const leaf = new X509Certificate(cert);
    expect(leaf.ca).toBe(false);
    expect(leaf.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(leaf.checkIssued(new X509Certificate(ca.certPem))).toBe(true);
    expect(leaf.subjectAltName?.split(', ').sort()).toEqual(['DNS:example.com', 'DNS:localhost', 'IP Address:0:0:0:0:0:0:0:1', 'IP Address:127.0.0.1'].sort());
    expect(leaf.checkHost('localhost')).toBe('localhost');
    expect(leaf.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(leaf.checkIP('::1')).toBe('::1');
    expect(leaf.checkHost('other.example.com')).toBeUndefined();
    expect(leaf.checkPrivateKey(require('node:crypto').createPrivateKey(key))).toBe(true);
    const days = (Date.parse(leaf.validTo) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(360);
    expect(days).toBeLessThan(400);
    expect(key).not.toContain(fs.readFileSync(path.join(dir, 'ca.key'), 'utf8').split('\n')[1]); // the leaf key is not the CA key
  });

  it('caches per name set (order, case and duplicates do not matter) and per host', async () => {
    const a = await ca.issue(['b.test', 'a.test']);
    const b = await ca.issue(['A.test', 'b.test', 'a.test']);
    const c = await ca.issue(['a.test']);
    expect(b.cert).toBe(a.cert);
    expect(c.cert).not.toBe(a.cert);
    expect(await ca.secureContextFor('ghcr.io')).toBe(await ca.secureContextFor('GHCR.io'));
  });

  it('refuses names a certificate cannot carry', async () => {
    expect(() => normalizeNames(['bad host'])).toThrow(/"bad host" is not a host name or an IP address/);
    expect(() => normalizeNames([])).toThrow(/at least one host name/);
    await expect(ca.issue(['x/y'])).rejects.toThrow(/"x\/y" is not a host name/);
  });

  it('serves TLS that a verifying client accepts for the right name and refuses for another', async () => {
    const server = tls.createServer(
      {
        SNICallback: (name, cb) => {
          ca.secureContextFor(name).then((ctx) => cb(null, ctx), (e: Error) => cb(e));
        },
      },
      (socket) => socket.end('hello'),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const connect = (servername: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port, servername, ca: ca.certPem }, () => {
          let data = '';
          s.on('data', (d: Buffer) => (data += d.toString()));
          s.on('end', () => resolve(data));
        });
        s.on('error', reject);
      });
    try {
      expect(await connect('ghcr.io')).toBe('hello');
      expect(await connect('quay.io')).toBe('hello');
      // the client checks the name against the certificate: a certificate for another name is refused
      const wrong = await new Promise<string>((resolve) => {
        const s = tls.connect({ host: '127.0.0.1', port, servername: 'ghcr.io', ca: ca.certPem, checkServerIdentity: (_h, cert) => tls.checkServerIdentity('quay.io', cert) }, () => resolve('accepted'));
        s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      });
      expect(wrong).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    } finally {
      server.close();
    }
  });

  it('two creators racing on an empty folder end with one CA', async () => {
    const race = path.join(tmp, 'race');
    const [a, b, c] = await Promise.all([loadOrCreateCA(race), loadOrCreateCA(race), loadOrCreateCA(race)]);
    expect(b.certPem).toBe(a.certPem);
    expect(c.certPem).toBe(a.certPem);
    expect(fs.readdirSync(race).sort()).toEqual(['ca.key', 'ca.pem']);
    const leaf = new X509Certificate((await b.issue(['x.test'])).cert);
    expect(leaf.verify(new X509Certificate(a.certPem).publicKey)).toBe(true);
  });

  it('says what to do with a broken folder', async () => {
    const broken = path.join(tmp, 'broken');
    fs.mkdirSync(broken);
    fs.writeFileSync(path.join(broken, 'ca.key'), 'not a key\n', { mode: 0o600 });
    await expect(loadOrCreateCA(broken)).rejects.toThrow(`${path.join(broken, 'ca.key')} is not a private key in PEM: delete the CA folder ${broken} to make a new CA`);
    const other = await loadOrCreateCA(path.join(tmp, 'other'));
    const mixed = path.join(tmp, 'mixed');
    fs.mkdirSync(mixed);
    fs.copyFileSync(path.join(dir, 'ca.key'), path.join(mixed, 'ca.key'));
    fs.copyFileSync(other.certPath, path.join(mixed, 'ca.pem'));
    await expect(loadOrCreateCA(mixed)).rejects.toThrow(/ca\.pem does not belong to .*ca\.key: delete the CA folder/);
  });
});

describe('defaultCaDir', () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env = { ...saved };
  });
  it('REGTAPE_CA_DIR first, then XDG_CONFIG_HOME, then ~/.config', () => {
    process.env.REGTAPE_CA_DIR = '/x/ca';
    process.env.XDG_CONFIG_HOME = '/cfg';
    expect(defaultCaDir()).toBe('/x/ca');
    delete process.env.REGTAPE_CA_DIR;
    expect(defaultCaDir()).toBe('/cfg/regtape/ca');
    process.env.XDG_CONFIG_HOME = 'relative';
    expect(defaultCaDir()).toBe(path.join(os.homedir(), '.config', 'regtape', 'ca'));
  });
});
