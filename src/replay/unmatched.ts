/**
 * Requests no fixture answered, aggregated: each distinct request once, with how often it came.
 * Bounded: a client looping on a miss must not grow memory or the summary without end.
 */
import type { Miss } from './match';

/** Distinct unmatched requests kept; further distinct ones are only counted. */
export const UNMATCHED_MAX = 1000;

export interface UnmatchedRequest extends Miss {
  /** How many times this request went unmatched. */
  count: number;
}

export class Unmatched {
  private byRequest = new Map<string, UnmatchedRequest>();
  /** Misses of distinct requests past the cap: counted, not kept. */
  private dropped = 0;

  /** Records a miss; `explain` runs only the first time a request is seen. */
  add(request: string, explain: () => Miss): UnmatchedRequest | undefined {
    const hit = this.byRequest.get(request);
    if (hit) {
      hit.count++;
      return hit;
    }
    if (this.byRequest.size >= UNMATCHED_MAX) {
      this.dropped++;
      return undefined;
    }
    const entry = { ...explain(), count: 1 };
    this.byRequest.set(request, entry);
    return entry;
  }

  list(): UnmatchedRequest[] {
    return [...this.byRequest.values()].map((m) => ({ ...m }));
  }

  /** Total unmatched requests, repeats and requests past the cap included. */
  total(): number {
    let n = this.dropped;
    for (const m of this.byRequest.values()) n += m.count;
    return n;
  }

  /** Distinct requests past the cap, not listed. */
  overflow(): number {
    return this.dropped;
  }

  clear(): void {
    this.byRequest.clear();
    this.dropped = 0;
  }
}
