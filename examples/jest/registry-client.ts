/**
 * The "code under test" of this example: a minimal registry client that pulls an image's manifest and
 * blobs over plain HTTP and checks every blob against its digest. Your own client takes its place.
 */
import { createHash } from 'node:crypto';
import * as http from 'node:http';

const MANIFEST_TYPES = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'];

export interface Pulled {
  /** sha256 of the manifest bytes, as `sha256:<hex>`. */
  digest: string;
  /** The config blob first, then the layers. */
  blobs: { digest: string; size: number }[];
}

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

function get(url: string, headers: Record<string, string> = {}, redirects = 3): Promise<Response> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          // Registries often redirect blob downloads (to a CDN, or regtape's /__regtape/redirect/...).
          if (status >= 300 && status < 400 && res.headers.location && redirects > 0) {
            resolve(get(new URL(res.headers.location, url).href, headers, redirects - 1));
          } else {
            resolve({ status, headers: res.headers, body: Buffer.concat(chunks) });
          }
        });
      })
      .on('error', reject);
  });
}

const sha256 = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

function ok(res: Response, what: string): Response {
  if (res.status !== 200) throw new Error(`${what}: HTTP ${res.status} ${res.body.toString().slice(0, 300)}`);
  return res;
}

export async function pullManifestAndBlobs(registryUrl: string, repo: string, tag: string): Promise<Pulled> {
  const base = registryUrl.replace(/\/+$/, '') + '/v2/';
  ok(await get(base), 'GET /v2/');

  const manifestRes = ok(await get(`${base}${repo}/manifests/${tag}`, { Accept: MANIFEST_TYPES.join(', ') }), `manifest ${repo}:${tag}`);
  const digest = sha256(manifestRes.body);
  const announced = manifestRes.headers['docker-content-digest'];
  if (announced && announced !== digest) throw new Error(`manifest digest ${digest} != Docker-Content-Digest ${announced}`);

  const manifest = JSON.parse(manifestRes.body.toString()) as { config: { digest: string }; layers: { digest: string }[] };
  const blobs: Pulled['blobs'] = [];
  for (const { digest: want } of [manifest.config, ...manifest.layers]) {
    const blob = ok(await get(`${base}${repo}/blobs/${want}`), `blob ${want}`).body;
    if (sha256(blob) !== want) throw new Error(`blob ${want} hashes to ${sha256(blob)}`);
    blobs.push({ digest: want, size: blob.length });
  }
  return { digest, blobs };
}
