import { MAX_RANGES, normalizeRange, parseRange } from '../../src/http/range';

describe('parseRange', () => {
  it('single, open, suffix ranges clipped to the body', () => {
    expect(parseRange('bytes=0-9', 100)).toEqual([{ start: 0, end: 9 }]);
    expect(parseRange('bytes=90-', 100)).toEqual([{ start: 90, end: 99 }]);
    expect(parseRange('bytes=-10', 100)).toEqual([{ start: 90, end: 99 }]);
    expect(parseRange('bytes=50-1000', 100)).toEqual([{ start: 50, end: 99 }]);
    expect(parseRange(undefined, 100)).toBeUndefined();
  });

  it('416 where the registry says 416: past the end, last before first, another unit, garbage', () => {
    expect(parseRange('bytes=100-200', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=9-3', 100)).toBe('unsatisfiable');
    expect(parseRange('items=1-2', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=a-b', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=-', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=-0', 100)).toBe('unsatisfiable');
  });

  it('coalesces overlapping and adjacent ranges, in ascending order', () => {
    expect(parseRange('bytes=20-29,0-9,5-14,15-16,50-', 100)).toEqual([
      { start: 0, end: 16 },
      { start: 20, end: 29 },
      { start: 50, end: 99 },
    ]);
    expect(parseRange('bytes=0-1,,4-5', 100)).toEqual([{ start: 0, end: 1 }, { start: 4, end: 5 }]);
  });

  it('100 overlapping ranges over an 8 MiB body send the body at most once', () => {
    const size = 8 * 1024 * 1024;
    const header = 'bytes=' + Array.from({ length: MAX_RANGES }, (_, i) => `${i}-${size - 1}`).join(',');
    const r = parseRange(header, size);
    expect(r).toEqual([{ start: 0, end: size - 1 }]);
  });

  it('more than MAX_RANGES ranges: the Range header is ignored (the whole body, as nginx max_ranges)', () => {
    const header = 'bytes=' + Array.from({ length: MAX_RANGES + 1 }, (_, i) => `${i * 10}-${i * 10 + 1}`).join(',');
    expect(parseRange(header, 10_000)).toBeUndefined();
  });

  it('normalizeRange compares ranges as written, blanks and unit case aside', () => {
    expect(normalizeRange('Bytes = 0-9, 20-29')).toBe('bytes=0-9,20-29');
    expect(normalizeRange(undefined)).toBeUndefined();
  });
});
