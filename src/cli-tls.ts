/** The TLS flags of `record` and `replay`, and `regtape ca`: flags turned into options, nothing else. */
import * as fs from 'node:fs';
import { Option } from 'commander';
import * as path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { UserError } from './http/server';
import { CA_CERT_FILE, defaultCaDir, loadOrCreateCA, ServeTlsOptions } from './proxy/ca';

export interface TlsFlags {
  tls?: boolean;
  tlsName?: string[];
  tlsCert?: string;
  tlsKey?: string;
  caDir?: string;
  upstreamCa?: string;
  resolve?: string[];
}

/** Repeatable option values. */
export const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

// The TLS flags, the same on record and replay (a fresh Option per command: commander keeps state in them).
export const tlsOption = (): Option => new Option('--tls', "serve HTTPS with a certificate from regtape's CA (127.0.0.1, ::1, localhost, --tls-name) or --tls-cert/--tls-key");
export const tlsNameOption = (): Option => new Option('--tls-name <name>', 'with --tls: another DNS name or IP the certificate covers (repeatable)').argParser(collect);
export const tlsCertOption = (): Option => new Option('--tls-cert <file>', 'with --tls: serve this certificate (PEM) instead of one from the CA');
export const tlsKeyOption = (): Option => new Option('--tls-key <file>', 'with --tls-cert: its private key (PEM)');
export const caDirOption = (): Option => new Option('--ca-dir <dir>', "with --tls or --proxy: regtape's CA folder (default $REGTAPE_CA_DIR or ~/.config/regtape/ca)");

/** --tls and its companions; a companion without --tls is an error, not a silent no-op. */
export function tlsFlagOptions(o: TlsFlags): ServeTlsOptions | undefined {
  if (!o.tls) {
    const stray = o.tlsName ? '--tls-name' : o.tlsCert ? '--tls-cert' : o.tlsKey ? '--tls-key' : o.caDir ? '--ca-dir' : undefined;
    if (stray) throw new UserError(`${stray} needs --tls`);
    return undefined;
  }
  if (o.caDir && (o.tlsCert || o.tlsKey)) throw new UserError('--ca-dir has no effect with --tls-cert/--tls-key: the certificate is yours, not from the CA');
  return { names: o.tlsName, caDir: o.caDir, certFile: o.tlsCert, keyFile: o.tlsKey };
}

/** `regtape ca`: creates the CA if needed; hints for stderr, then the certificate's path. */
export async function caCommand(dir?: string): Promise<{ hints: string[]; certPath: string }> {
  const caDir = path.resolve(dir ?? defaultCaDir());
  const existed = fs.existsSync(path.join(caDir, CA_CERT_FILE));
  const ca = await loadOrCreateCA(caDir);
  const cert = new X509Certificate(ca.certPem);
  const p = ca.certPath;
  return {
    hints: [
      `regtape: ${existed ? 'CA' : 'created a new CA'} in ${caDir} (${cert.subject.split('\n')[0]}, valid until ${cert.validTo}); its key stays there (mode 0600).`,
      'Trust its certificate in the client (README: TLS):',
      `  Go tools (skopeo, podman, buildah, crane, ctr):  SSL_CERT_FILE=${p}`,
      `  containers tools:  /etc/containers/certs.d/HOST:PORT/ca.crt   docker daemon:  /etc/docker/certs.d/HOST:PORT/ca.crt`,
      `  containerd:  hosts.toml  ca = "${p}"   Node:  NODE_EXTRA_CA_CERTS=${p}   curl:  --cacert ${p}`,
    ],
    certPath: p,
  };
}
