// A minimal self-signed X.509 certificate written with node crypto (no openssl needed): just
// enough for docker-registry's `auth.token.rootcertbundle` (kid and x5c key references).
import * as crypto from 'crypto';

function len(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v >>= 8) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}
function tlv(tag: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), len(body.length), body]);
}
const seq = (...items: Buffer[]): Buffer => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]): Buffer => tlv(0x31, Buffer.concat(items));
const explicit = (n: number, item: Buffer): Buffer => tlv(0xa0 + n, item);
const nul = (): Buffer => Buffer.from([0x05, 0x00]);
const bool = (v: boolean): Buffer => Buffer.from([0x01, 0x01, v ? 0xff : 0x00]);
const octets = (b: Buffer): Buffer => tlv(0x04, b);
const bits = (b: Buffer, unused = 0): Buffer => tlv(0x03, Buffer.concat([Buffer.from([unused]), b]));
const utf8 = (s: string): Buffer => tlv(0x0c, Buffer.from(s, 'utf8'));

function integer(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  let v = b.subarray(i);
  if (v[0] & 0x80) v = Buffer.concat([Buffer.from([0]), v]);
  return tlv(0x02, v);
}

function oid(s: string): Buffer {
  const p = s.split('.').map(Number);
  const out: number[] = [40 * p[0] + p[1]];
  for (const n of p.slice(2)) {
    const grp: number[] = [];
    let v = n;
    do {
      grp.unshift(v & 0x7f);
      v = Math.floor(v / 128);
    } while (v > 0);
    for (let k = 0; k < grp.length - 1; k++) grp[k] |= 0x80;
    out.push(...grp);
  }
  return tlv(0x06, Buffer.from(out));
}

function utcTime(d: Date): Buffer {
  const two = (n: number): string => String(n).padStart(2, '0');
  const s = `${two(d.getUTCFullYear() % 100)}${two(d.getUTCMonth() + 1)}${two(d.getUTCDate())}${two(d.getUTCHours())}${two(d.getUTCMinutes())}${two(d.getUTCSeconds())}Z`;
  return tlv(0x17, Buffer.from(s, 'ascii'));
}

/** Self-signed CA certificate (PEM) for `key` (RSA or EC P-256), CN = commonName, valid for `days`. */
export function selfSignedCert(key: crypto.KeyObject, commonName: string, days = 3650): string {
  const isEC = key.asymmetricKeyType === 'ec';
  const sigAlg = isEC ? seq(oid('1.2.840.10045.4.3.2')) : seq(oid('1.2.840.113549.1.1.11'), nul());
  const name = seq(set(seq(oid('2.5.4.3'), utf8(commonName))));
  const now = Date.now();
  const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
  const serial = crypto.randomBytes(16);
  serial[0] &= 0x7f;
  serial[0] |= 0x01;
  const extensions = explicit(
    3,
    seq(
      seq(oid('2.5.29.19'), bool(true), octets(seq(bool(true)))), // basicConstraints: critical, CA:TRUE
      seq(oid('2.5.29.15'), bool(true), octets(bits(Buffer.from([0x84]), 2))), // keyUsage: digitalSignature, keyCertSign
    ),
  );
  const tbs = seq(
    explicit(0, integer(Buffer.from([2]))), // v3
    integer(serial),
    sigAlg,
    name,
    seq(utcTime(new Date(now - 86400_000)), utcTime(new Date(now + days * 86400_000))),
    name,
    spki,
    extensions,
  );
  const sig = crypto.sign('sha256', tbs, key);
  const der = seq(tbs, sigAlg, bits(sig));
  const b64 = der.toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}-----END CERTIFICATE-----\n`;
}

/**
 * libtrust key id (what docker-registry expects in a JWT `kid`): SHA-256 of the DER
 * SubjectPublicKeyInfo, first 30 bytes, base32 without padding, 12 groups of 4 joined by ':'.
 */
export function libtrustKid(pub: crypto.KeyObject): string {
  const der = pub.export({ type: 'spki', format: 'der' });
  const h = crypto.createHash('sha256').update(der).digest().subarray(0, 30);
  const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let nbits = 0;
  let val = 0;
  let s = '';
  for (const b of h) {
    val = ((val << 8) | b) & 0xffff;
    nbits += 8;
    while (nbits >= 5) {
      s += A[(val >>> (nbits - 5)) & 31];
      nbits -= 5;
    }
  }
  if (nbits > 0) s += A[(val << (5 - nbits)) & 31];
  return (s.match(/.{1,4}/g) ?? []).join(':');
}
