/**
 * Command-line mistakes that would otherwise pass silently: a flag that does nothing in this mode,
 * `--strict` taking the fixtures folder as its value, a folder with no fixtures. Flags only; the
 * library is not involved.
 */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { UserError } from './http/server';

/**
 * `--strict [what]` takes the next word as its value: `replay --strict fixtures/` would lose the folder.
 * A value that names an existing path is a fixtures path; `unused` is the mode.
 */
export function strictAndPaths(paths: string[], strict: true | string | undefined): { paths: string[]; strict: true | 'unused' | undefined } {
  if (strict === undefined || strict === true || strict === 'unused') {
    if (!paths.length) throw new UserError('replay needs a fixtures folder, e.g. regtape replay fixtures/');
    return { paths, strict };
  }
  if (existsSync(strict)) return { paths: [strict, ...paths], strict: true };
  throw new UserError(`--strict takes no value or 'unused' (--strict=unused), not ${JSON.stringify(strict)}, and there is no fixtures path of that name`);
}

/** Was the flag given (command line or environment), rather than left at its default? */
export function given(cmd: Command, name: string): boolean {
  const source = cmd.getOptionValueSource(name);
  return source === 'cli' || source === 'env';
}

/** `replay`'s recording flags do nothing without --record-missing: refused, with the reason. */
export function refuseIdleReplayFlags(cmd: Command, recordMissing: boolean | undefined): void {
  if (recordMissing) return;
  for (const [name, flag] of [['upstream', '--upstream'], ['out', '--out'], ['format', '--format']] as const) {
    if (given(cmd, name)) throw new UserError(`${flag} does nothing in replay without --record-missing (replay serves only what the fixtures hold): add --record-missing, or drop ${flag}`);
  }
}

/** An empty or wrong folder is an error: a test double that serves nothing would pass silently. */
export function refuseEmpty(what: 'replay' | 'verify', paths: string[], fixtures: number): void {
  if (fixtures > 0) return;
  throw new UserError(
    `no fixtures in ${paths.join(', ')}: a fixtures folder holds the *.md or *.yaml files regtape record wrote (markdown with a '## in' section); check the path, or pass --allow-empty if an empty ${what === 'replay' ? 'recording' : 'folder'} is what you mean`,
  );
}
