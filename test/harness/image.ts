// A small random OCI image layout (written entirely in node: tar, gzip, JSON) for pushing with skopeo.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { defaultTempDirs, TempDirs } from './tmp';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface ImageOptions {
  /** number of layers (default 2) */
  layers?: number;
  /** bytes of random data in each layer (default 256 KiB) */
  layerSize?: number;
  /** tag (the index's org.opencontainers.image.ref.name), default 'v1' */
  tag?: string;
  /** tracker for the image's temp dir (default: the process-wide one) */
  tmp?: TempDirs;
}

export interface Image {
  /** the OCI layout directory */
  dir: string;
  /** 'oci:DIR:TAG' */
  ref: string;
  tag: string;
  manifestDigest: string;
  manifestBytes: Buffer;
  configDigest: string;
  configBytes: Buffer;
  /** compressed layer digests, in manifest order */
  layerDigests: string[];
  /** uncompressed (tar) digests, in order: the config's rootfs.diff_ids */
  diffIds: string[];
  /** every blob (config, layers, manifest) -> size in bytes */
  blobs: Map<string, number>;
}

export const sha256 = (b: Buffer | string): string => `sha256:${crypto.createHash('sha256').update(b).digest('hex')}`;

function tarHeader(name: string, size: number, type: '0' | '5', mode: number): Buffer {
  const h = Buffer.alloc(512);
  const str = (s: string, off: number, n: number): void => {
    h.write(s, off, n, 'utf8');
  };
  const oct = (v: number, off: number, n: number): void => str(v.toString(8).padStart(n - 1, '0') + '\0', off, n);
  if (Buffer.byteLength(name) > 100) throw new Error(`tar: name too long: ${name}`);
  str(name, 0, 100);
  oct(mode, 100, 8);
  oct(0, 108, 8); // uid
  oct(0, 116, 8); // gid
  oct(size, 124, 12);
  oct(946684800, 136, 12); // mtime: 2000-01-01, fixed
  str('        ', 148, 8); // checksum placeholder
  str(type, 156, 1);
  str('ustar\0', 257, 6);
  str('00', 263, 2);
  str('root', 265, 32);
  str('root', 297, 32);
  let sum = 0;
  for (const b of h) sum += b;
  str(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  return h;
}

/** an uncompressed ustar archive of the given directories and files */
export function tarArchive(entries: Array<{ name: string; data?: Buffer }>): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (e.data === undefined) {
      parts.push(tarHeader(e.name.endsWith('/') ? e.name : `${e.name}/`, 0, '5', 0o755));
    } else {
      parts.push(tarHeader(e.name, e.data.length, '0', 0o644), e.data);
      const pad = (512 - (e.data.length % 512)) % 512;
      if (pad) parts.push(Buffer.alloc(pad));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export async function makeImage(opts: ImageOptions = {}): Promise<Image> {
  const nLayers = opts.layers ?? 2;
  const layerSize = opts.layerSize ?? 256 * 1024;
  const tag = opts.tag ?? 'v1';
  if (!Number.isInteger(nLayers) || nLayers < 1) throw new Error('makeImage: layers must be >= 1');
  const dir = (opts.tmp ?? defaultTempDirs).make('image');
  const blobDir = path.join(dir, 'blobs', 'sha256');
  fs.mkdirSync(blobDir, { recursive: true });
  const blobs = new Map<string, number>();
  const writeBlob = async (data: Buffer): Promise<string> => {
    const d = sha256(data);
    await fs.promises.writeFile(path.join(blobDir, d.slice('sha256:'.length)), data);
    blobs.set(d, data.length);
    return d;
  };

  const layerDigests: string[] = [];
  const diffIds: string[] = [];
  const layerDescs: object[] = [];
  const history: object[] = [];
  for (let i = 0; i < nLayers; i++) {
    const tar = tarArchive([
      { name: `layer${i}` },
      { name: `layer${i}/data.bin`, data: crypto.randomBytes(layerSize) },
      { name: `layer${i}/hello.txt`, data: Buffer.from(`hello from layer ${i} of ${tag}\n`) },
    ]);
    const gz = zlib.gzipSync(tar);
    diffIds.push(sha256(tar));
    const d = await writeBlob(gz);
    layerDigests.push(d);
    layerDescs.push({ mediaType: OCI_LAYER_GZIP, digest: d, size: gz.length });
    history.push({ created: '2000-01-01T00:00:00Z', created_by: `regtape harness layer ${i}` });
  }
  const configBytes = Buffer.from(
    JSON.stringify({
      created: '2000-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history,
    }),
  );
  const configDigest = await writeBlob(configBytes);
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: configDigest, size: configBytes.length },
      layers: layerDescs,
    }),
  );
  const manifestDigest = await writeBlob(manifestBytes);
  await fs.promises.writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await fs.promises.writeFile(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        {
          mediaType: OCI_MANIFEST,
          digest: manifestDigest,
          size: manifestBytes.length,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  return { dir, ref: `oci:${dir}:${tag}`, tag, manifestDigest, manifestBytes, configDigest, configBytes, layerDigests, diffIds, blobs };
}
