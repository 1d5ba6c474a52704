/**
 * Progress of a recording: every exchange in flight with its bytes so far (for Ctrl-C: "finishing 2
 * exchanges, 120 MB of 300 MB"), a report on transfers over a few MB (on a TTY a live line, otherwise
 * a line every few seconds), and the totals for the summary at the end. Output goes only to the
 * functions given: the library never writes to a terminal itself.
 */

/** Transfers at least this large (or of unknown length, once past it) are reported. */
export const PROGRESS_MIN_BYTES = 4 * 1024 * 1024;

export interface ProgressOptions {
  /** true: one live line, redrawn (`live`); false: a `line` every `intervalMs`. */
  tty: boolean;
  /** A complete line (non-TTY reports). */
  line?: (text: string) => void;
  /** The live line's new text ('' clears it). TTY only. */
  live?: (text: string) => void;
  intervalMs?: number;
  minBytes?: number;
  /** For tests of the rate: milliseconds. */
  now?: () => number;
}

export interface Transfer {
  readonly label: string;
  readonly total?: number;
  readonly bytes: number;
  add(n: number): void;
  /** Done (recorded or dropped); `stored`: the digest of the body it put in the store. */
  end(recorded: boolean, stored?: string): void;
}

export interface RecordTotals {
  exchanges: number;
  bytes: number;
  bodies: number;
  ms: number;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

export class Progress {
  private readonly active = new Set<TransferImpl>();
  private readonly started: number;
  private exchanges = 0;
  private bytes = 0;
  private readonly bodies = new Set<string>();
  private timer?: NodeJS.Timeout;
  private lastLive = 0;
  private readonly now: () => number;

  constructor(private readonly opts: ProgressOptions = { tty: false }) {
    this.now = opts.now ?? Date.now;
    this.started = this.now();
  }

  /** A response body starts streaming; `total` from its Content-Length when known. */
  start(label: string, total?: number): Transfer {
    const t = new TransferImpl(this, label, total, this.now());
    this.active.add(t);
    return t;
  }

  /** The exchanges in flight, largest first. */
  inflight(): Array<{ label: string; bytes: number; total?: number }> {
    return [...this.active].sort((a, b) => b.bytes - a.bytes).map((t) => ({ label: t.label, bytes: t.bytes, total: t.total }));
  }

  totals(): RecordTotals {
    return { exchanges: this.exchanges, bytes: this.bytes, bodies: this.bodies.size, ms: this.now() - this.started };
  }

  /** `recorded 12 exchanges, 301.2 MiB, 4 bodies stored, in 14.2 s`. */
  summary(): string {
    const t = this.totals();
    return `recorded ${t.exchanges} exchange${t.exchanges === 1 ? '' : 's'}, ${formatBytes(t.bytes)}, ${t.bodies} bod${t.bodies === 1 ? 'y' : 'ies'} stored, in ${(t.ms / 1000).toFixed(1)} s`;
  }

  /** `GET /v2/x/blobs/sha256:ab12… 120.0 MiB of 300.0 MiB (40%) at 55.1 MiB/s`. */
  describe(t: { label: string; bytes: number; total?: number }, since?: number): string {
    const pct = t.total ? ` (${Math.floor((t.bytes / t.total) * 100)}%)` : '';
    const of = t.total !== undefined ? ` of ${formatBytes(t.total)}` : '';
    const secs = since !== undefined ? (this.now() - since) / 1000 : 0;
    const rate = secs > 0 ? ` at ${formatBytes(Math.round(t.bytes / secs))}/s` : '';
    return `${t.label} ${formatBytes(t.bytes)}${of}${pct}${rate}`;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.opts.tty && this.lastLive) this.opts.live?.('');
  }

  /** @internal */
  onData(t: TransferImpl): void {
    if (!this.large(t)) return;
    if (this.opts.tty) {
      const now = this.now();
      if (now - this.lastLive < 200) return;
      this.lastLive = now;
      this.opts.live?.(this.liveText());
    } else this.timer ??= setInterval(() => this.report(), this.opts.intervalMs ?? 5000).unref();
  }

  /** @internal */
  onEnd(t: TransferImpl, recorded: boolean, stored: string | undefined): void {
    this.active.delete(t);
    if (recorded) {
      this.exchanges++;
      this.bytes += t.bytes;
      if (stored) this.bodies.add(stored);
    }
    if (this.opts.tty && this.lastLive) this.opts.live?.(this.liveText());
    if (![...this.active].some((a) => this.large(a))) {
      if (this.timer) clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  private large(t: TransferImpl): boolean {
    return (t.total ?? t.bytes) >= (this.opts.minBytes ?? PROGRESS_MIN_BYTES);
  }

  private liveText(): string {
    const large = [...this.active].filter((a) => this.large(a));
    if (!large.length) return '';
    const first = this.describe(large[0], large[0].since);
    return large.length > 1 ? `${first} (+${large.length - 1} more)` : first;
  }

  private report(): void {
    for (const t of this.active) if (this.large(t)) this.opts.line?.(`regtape: ${this.describe(t, t.since)}`);
  }
}

class TransferImpl implements Transfer {
  bytes = 0;
  private ended = false;
  constructor(
    private readonly progress: Progress,
    readonly label: string,
    readonly total: number | undefined,
    readonly since: number,
  ) {}
  add(n: number): void {
    this.bytes += n;
    this.progress.onData(this);
  }
  end(recorded: boolean, stored?: string): void {
    if (this.ended) return;
    this.ended = true;
    this.progress.onEnd(this, recorded, stored);
  }
}
