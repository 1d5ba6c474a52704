/**
 * HTTP Range (RFC 9110 §14) for a body of known size: single ranges, suffix ranges, several ranges.
 * Registries SHOULD honour Range on blob GETs; containerd and docker resume with `bytes=N-`,
 * containers/image's zstd:chunked asks for several ranges at once.
 */
export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/**
 * The ranges a `Range` header asks for within `size` bytes: undefined when the header is absent or
 * not a bytes range (the whole body is sent, as RFC 9110 allows); 'unsatisfiable' for a 416.
 */
export function parseRange(header: string | undefined, size: number): ByteRange[] | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^\s*bytes\s*=\s*(.+)$/i.exec(header);
  if (!m) return undefined;
  const ranges: ByteRange[] = [];
  const parts = m[1].split(',');
  if (parts.length > 100) return undefined; // a flood of tiny ranges: answer with the whole body
  for (const raw of parts) {
    const p = raw.trim();
    const r = /^(\d*)\s*-\s*(\d*)$/.exec(p);
    if (!r || (r[1] === '' && r[2] === '')) return undefined;
    if (r[1] === '') {
      const n = Number(r[2]);
      if (n === 0) continue;
      ranges.push({ start: Math.max(0, size - n), end: size - 1 });
    } else {
      const start = Number(r[1]);
      const end = r[2] === '' ? size - 1 : Math.min(Number(r[2]), size - 1);
      if (r[2] !== '' && Number(r[2]) < start) return undefined;
      if (start >= size) continue;
      ranges.push({ start, end });
    }
  }
  return ranges.length ? ranges : 'unsatisfiable';
}

/** True when an If-None-Match header names this ETag (or `*`). */
export function etagMatches(ifNoneMatch: string | undefined, etag: string | undefined): boolean {
  if (!ifNoneMatch || !etag) return false;
  const bare = (t: string): string => t.trim().replace(/^W\//, '');
  return ifNoneMatch.split(',').some((t) => t.trim() === '*' || bare(t) === bare(etag));
}
