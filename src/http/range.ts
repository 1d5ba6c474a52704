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

/** More ranges than this in one request: the Range header is ignored and the whole body sent (nginx's max_ranges). */
export const MAX_RANGES = 100;

/**
 * The ranges a `Range` header asks for within `size` bytes, as the registry (Go's http.ServeContent)
 * and nginx answer them:
 * - undefined when there is no header, or more than MAX_RANGES ranges (the whole body is sent, as
 *   RFC 9110 allows and nginx's max_ranges does);
 * - 'unsatisfiable' (a 416) when no range overlaps the body, and for a header the registry rejects:
 *   another unit than bytes, a malformed range, a range whose last byte is before its first;
 * - otherwise the ranges clipped to the body, overlapping and adjacent ones coalesced (RFC 9110 §14.3
 *   allows it), in ascending order: a client never gets a byte twice, so what is sent is at most
 *   the body plus the multipart framing, however the ranges overlap.
 */
export function parseRange(header: string | undefined, size: number): ByteRange[] | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*bytes\s*=\s*(.+)$/i.exec(header);
  if (!m) return 'unsatisfiable';
  const parts = m[1].split(',');
  if (parts.length > MAX_RANGES) return undefined;
  const ranges: ByteRange[] = [];
  for (const raw of parts) {
    const p = raw.trim();
    if (p === '') continue; // "bytes=0-1,,5-6": empty list elements are allowed (RFC 9110 §5.6.1)
    const r = /^(\d*)\s*-\s*(\d*)$/.exec(p);
    if (!r || (r[1] === '' && r[2] === '')) return 'unsatisfiable';
    if (r[1] === '') {
      const n = Number(r[2]);
      if (n === 0 || size === 0) continue;
      ranges.push({ start: Math.max(0, size - n), end: size - 1 });
    } else {
      const start = Number(r[1]);
      if (r[2] !== '' && Number(r[2]) < start) return 'unsatisfiable';
      if (start >= size) continue;
      ranges.push({ start, end: r[2] === '' ? size - 1 : Math.min(Number(r[2]), size - 1) });
    }
  }
  if (ranges.length === 0) return 'unsatisfiable';
  return coalesce(ranges);
}

/** Sorted, with overlapping and adjacent ranges merged into one. */
export function coalesce(ranges: ByteRange[]): ByteRange[] {
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  const out: ByteRange[] = [{ ...sorted[0] }];
  for (const r of sorted.slice(1)) {
    const last = out[out.length - 1];
    if (r.start <= last.end + 1) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out;
}

/** A Range header as compared between a request and a recording: unit lower-cased, blanks removed. */
export function normalizeRange(header: string | undefined): string | undefined {
  return header === undefined ? undefined : header.replace(/\s+/g, '').toLowerCase();
}

/** True when an If-None-Match header names this ETag (or `*`). */
export function etagMatches(ifNoneMatch: string | undefined, etag: string | undefined): boolean {
  if (!ifNoneMatch || !etag) return false;
  const bare = (t: string): string => t.trim().replace(/^W\//, '');
  return ifNoneMatch.split(',').some((t) => t.trim() === '*' || bare(t) === bare(etag));
}
