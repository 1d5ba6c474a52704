/**
 * `ls`: what a fixture folder holds, by repository and tag. Reads fixtures and stats stored bodies;
 * never hashes (that is `verify`).
 */
import { promises as fsp } from 'node:fs';
import { LoadedExchange } from '../fixture/files';
import { InspectOptions, manifestText, plural, Problem, readForInspection, RecordingIndex, referencesOf } from './verify';
import { bodyDigest } from '../fixture/model';

export interface TagListing {
  tag: string;
  /** The manifest digest the tag resolved to. */
  digest: string;
  mediaType?: string;
}

export interface ManifestListing {
  digest: string;
  mediaType?: string;
  size: number;
}

export interface BlobListing {
  digest: string;
  /** From the stored body, else a recorded HEAD's Content-Length, else the manifest's descriptor. */
  size?: number;
  /** Whether its bytes are in the recording (a replayed GET of it would be answered). */
  stored: boolean;
}

export interface RepositoryListing {
  name: string;
  tags: TagListing[];
  manifests: ManifestListing[];
  /** Blobs requested from this repository or referenced by its manifests. */
  blobs: BlobListing[];
  /** Exchanges about this repository (redirect follow-ups of its blobs included). */
  exchanges: number;
}

export interface Listing {
  repositories: RepositoryListing[];
  totals: {
    /** Fixture files. */
    files: number;
    exchanges: number;
    /** Distinct stored bodies present in the body store, and their bytes. */
    bodies: number;
    storedBytes: number;
  };
  /** Files that could not be parsed (left out of the listing; `verify` tells more). */
  skipped: Problem[];
}

/** Lists what the fixtures under the paths hold. Throws FixturePathError only for a path that does not exist. */
export async function ls(paths: string[], opts: InspectOptions = {}): Promise<Listing> {
  const read = await readForInspection(paths, opts);
  const index = new RecordingIndex(read.exchanges);

  // Distinct stored bodies, stat'ed once.
  const onDisk = new Map<string, number | undefined>();
  const sizeOnDisk = async (ex: LoadedExchange, digest: string): Promise<number | undefined> => {
    let p: string;
    try {
      p = ex.store.pathFor(digest);
    } catch {
      return undefined;
    }
    if (!onDisk.has(p)) onDisk.set(p, await fsp.stat(p).then((s) => (s.isFile() ? s.size : undefined), () => undefined));
    return onDisk.get(p);
  };
  for (const ex of read.exchanges) {
    for (const b of [ex.request.body, ex.response?.body]) if (b?.kind === 'stored') await sizeOnDisk(ex, b.digest);
  }

  const repositories: RepositoryListing[] = [];
  for (const name of index.repositories()) {
    const tags = index.tags
      .filter((t) => t.repo === name)
      .map((t) => ({ tag: t.tag, digest: t.digest, ...(t.mediaType ? { mediaType: t.mediaType } : {}) }))
      .sort((a, b) => cmp(a.tag, b.tag) || cmp(a.digest, b.digest) || cmp(a.mediaType ?? '', b.mediaType ?? ''));

    const manifests = new Map<string, ManifestListing>();
    const blobSizes = new Map<string, number | undefined>();
    const noteBlob = (digest: string, size: number | undefined): void => {
      if (!blobSizes.has(digest) || (blobSizes.get(digest) === undefined && size !== undefined)) blobSizes.set(digest, size);
    };
    for (const m of index.manifests) {
      if (m.repo !== name || manifests.has(m.digest)) continue;
      manifests.set(m.digest, { digest: m.digest, ...(m.mediaType ? { mediaType: m.mediaType } : {}), size: m.size });
      const text = await manifestText(m.ex.response!.body, m.ex.store);
      for (const r of (text === undefined ? undefined : referencesOf(text)) ?? []) {
        if (r.kind !== 'manifest') noteBlob(r.digest, r.size);
      }
    }
    for (const [digest, src] of index.repoBlobs.get(name) ?? []) noteBlob(digest, src.body.kind === 'stored' ? src.body.size : undefined);
    for (const [digest, size] of index.repoHeads.get(name) ?? []) noteBlob(digest, size);

    const blobs: BlobListing[] = [];
    for (const [digest, described] of blobSizes) {
      // The bytes replay would serve: this repository's recorded GET, else any stored body with that digest.
      const src = index.repoBlobs.get(name)?.get(digest);
      const ex = src?.ex ?? index.storedBodies.get(digest);
      const body = ex?.response?.body;
      let stored = false;
      let size = described;
      if (ex && body) {
        if (body.kind === 'stored') {
          const actual = await sizeOnDisk(ex, body.digest);
          stored = actual !== undefined;
          size = body.size;
        } else if (body.kind === 'inline' && bodyDigest(body) === digest) {
          stored = true;
          size = Buffer.byteLength(body.text, 'utf8');
        }
      }
      blobs.push({ digest, ...(size !== undefined ? { size } : {}), stored });
    }
    blobs.sort((a, b) => cmp(a.digest, b.digest));

    repositories.push({
      name,
      tags,
      manifests: [...manifests.values()].sort((a, b) => cmp(a.digest, b.digest)),
      blobs,
      exchanges: index.repoExchanges.get(name)?.size ?? 0,
    });
  }

  let storedBytes = 0;
  let bodies = 0;
  for (const size of onDisk.values()) {
    if (size === undefined) continue;
    bodies++;
    storedBytes += size;
  }
  return {
    repositories,
    totals: { files: read.files.length, exchanges: read.exchanges.length, bodies, storedBytes },
    skipped: read.unreadable,
  };
}

/** A compact text table, in a stable order: per repository its tags, manifests and blobs. */
export function formatListing(l: Listing): string {
  const out: string[] = [];
  for (const r of l.repositories) {
    out.push(`${r.name}  (${plural(r.tags.length, 'tag')}, ${plural(r.manifests.length, 'manifest')}, ${plural(r.blobs.length, 'blob')}, ${plural(r.exchanges, 'exchange')})`);
    const sections: string[][][] = [
      r.tags.map((t) => ['tag', t.tag, t.digest, t.mediaType ?? '-']),
      r.manifests.map((m) => ['manifest', m.digest, bytes(m.size), m.mediaType ?? '-']),
      r.blobs.map((b) => ['blob', b.digest, b.size === undefined ? '?' : bytes(b.size), b.stored ? 'stored' : 'NOT RECORDED']),
    ];
    for (const rows of sections) out.push(...table(rows).map((line) => '  ' + line));
  }
  if (l.repositories.length === 0) out.push('no repositories');
  for (const s of l.skipped) out.push(`skipped ${s.file}:${s.line}: ${s.message}`);
  const t = l.totals;
  out.push(`total: ${plural(t.files, 'fixture')}, ${plural(t.exchanges, 'exchange')}, ${plural(t.bodies, 'stored body', 'stored bodies')}, ${bytes(t.storedBytes)}`);
  return out.join('\n') + '\n';
}

/** Columns padded to their widest cell; sizes (`… B`) right-aligned; the last column left ragged. */
function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  widths[0] = Math.max(widths[0] ?? 0, 'manifest'.length); // the kind column lines up across sections
  const cell = (c: string, i: number, last: boolean): string => (last ? c : /^\d+ B\b/.test(c) ? c.padStart(widths[i]) : c.padEnd(widths[i]));
  return rows.map((row) => row.map((c, i) => cell(c, i, i === row.length - 1)).join('  ').trimEnd());
}

/** `49564 B (48.4 KiB)`; under 1 KiB just `220 B`. */
function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${n} B (${v.toFixed(1)} ${units[u]})`;
}


function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
