/**
 * What `regtape replay` writes while it runs: text lines (default) or, with `--log-format json`, one
 * JSON object per line on stderr, so a CI system or a test harness parses it without regular expressions.
 * Request lines carry the fields of GET /__regtape/requests; every other line is {level, message}.
 */
import { InvalidArgumentError } from 'commander';
import type { ServedRequest } from '../replay/replayer';
import type { SummaryJson } from '../control/api';
import { writeFileAtomic } from '../fixture/files';

export type LogFormat = 'text' | 'json';

export function parseLogFormat(v: string): LogFormat {
  if (v === 'text' || v === 'json') return v;
  throw new InvalidArgumentError("expected 'text' or 'json'");
}

export interface Output {
  /** A line about regtape itself (notes, warnings, the shutdown summary). */
  say(line: string, level?: 'info' | 'warn'): void;
  /** One request answered: for ReplayOptions.onRequest (json) or undefined (text keeps the log lines). */
  onRequest?: (r: ServedRequest) => void;
  /** ReplayOptions.log. */
  log(line: string, level?: 'request' | 'warn'): void;
}

/** `quiet` drops the lines of requests that were answered; misses, refusals and errors always show. */
export function output(format: LogFormat, quiet: boolean, write: (s: string) => void): Output {
  if (format === 'text') {
    return {
      say: (line) => write(line),
      log: (line, level) => (level === 'warn' || !quiet ? write(line) : undefined),
    };
  }
  const say = (line: string, level: 'info' | 'warn' = 'info'): void => write(JSON.stringify({ time: new Date().toISOString(), level, message: line }));
  return {
    say,
    onRequest: (r) => {
      if (quiet && (r.outcome === 'served' || r.outcome === 'derived')) return;
      write(JSON.stringify(r));
    },
    log: (line, level) => (level === 'warn' || !quiet ? say(line, level === 'warn' ? 'warn' : 'info') : undefined),
  };
}

/** `--report FILE`: the summary as GET /__regtape/summary answers it, written whole or not at all. */
export async function writeReport(file: string, report: SummaryJson): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(report, null, 2) + '\n');
}
