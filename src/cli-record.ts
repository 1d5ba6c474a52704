/**
 * `regtape record` on a terminal or in CI: progress of large transfers, the summary at the end, and
 * Ctrl-C (the first finishes what is in flight and says how far it is; a second exits at once;
 * --drain-timeout bounds the wait). Fixtures and bodies are only ever renamed into place complete, so
 * exiting at once leaves temp files at most, which the next `record` removes.
 */
import { InvalidArgumentError } from 'commander';
import type { RecordServer } from './record/proxy';
import { formatBytes, Progress } from './record/progress';

export function drainTimeout(v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || n <= 0) throw new InvalidArgumentError('expected seconds > 0, e.g. 30');
  return n;
}

/** Progress on stderr: a live line on a TTY, else a line every 5 s, for transfers over 4 MiB. */
export function stderrProgress(): Progress {
  const tty = !!process.stderr.isTTY;
  return new Progress({
    tty,
    line: (text) => void process.stderr.write(text + '\n'),
    live: (text) => void process.stderr.write('\r\x1b[K' + text),
  });
}

/** A log line on stderr that does not run into the live progress line on a TTY. */
export function stderrLog(line: string): void {
  process.stderr.write(process.stderr.isTTY ? '\r\x1b[K' + line + '\n' : line + '\n');
}

/** SIGINT/SIGTERM for record. `say` writes a line on stderr. */
export function onRecordSignals(server: RecordServer, say: (line: string) => void, timeoutSeconds?: number): void {
  let signals = 0;
  const handler = (sig: string): void => {
    signals++;
    if (signals > 1) {
      say(`regtape: ${sig} again: stopping now; ${server.inflightCount()} exchange(s) not recorded (nothing half-written: the next record removes the temp files)`);
      process.exit(130);
    }
    server.progress.stop();
    const n = server.inflightCount();
    const moving = server.progress.inflight();
    const detail = moving.length ? ': ' + moving.slice(0, 3).map((t) => server.progress.describe(t)).join('; ') + (moving.length > 3 ? `; +${moving.length - 3} more` : '') : '';
    say(`regtape: ${sig}, finishing ${n} in-flight exchange(s)${detail}${n ? ` (${sig === 'SIGINT' ? 'Ctrl-C' : sig} again to stop at once${timeoutSeconds ? `; giving up after ${timeoutSeconds} s` : ''})` : ''}`);
    let timer: NodeJS.Timeout | undefined;
    if (timeoutSeconds) {
      timer = setTimeout(() => {
        const left = server.progress.inflight();
        const bytes = left.reduce((a, t) => a + t.bytes, 0);
        say(`regtape: --drain-timeout ${timeoutSeconds} s: stopping with ${server.inflightCount()} exchange(s) unfinished (${formatBytes(bytes)} received), not recorded`);
        process.exit(1);
      }, timeoutSeconds * 1000);
    }
    server.close().then(
      () => {
        if (timer) clearTimeout(timer);
        say(`regtape: ${server.progress.summary()}`);
        process.exit(0);
      },
      (e: Error) => {
        say(`regtape: ${e.message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => handler('SIGINT'));
  process.on('SIGTERM', () => handler('SIGTERM'));
}
