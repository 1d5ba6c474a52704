// Temporary directories that are removed again: every harness function that needs a scratch
// directory takes one from a TempDirs tracker (the Harness passes its own; otherwise the
// process-wide `defaultTempDirs` is used, which is also emptied when the process exits).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export class TempDirs {
  private readonly dirs = new Set<string>();

  /** mkdtemp under os.tmpdir(), named `regtape-<prefix>-XXXXXX`, and remember it. */
  make(prefix: string): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `regtape-${prefix.replace(/[^A-Za-z0-9_.-]/g, '_')}-`));
    this.dirs.add(dir);
    return dir;
  }

  /** Remember a directory created elsewhere so that removeAll() deletes it. */
  track(dir: string): void {
    this.dirs.add(dir);
  }

  /** Remove one directory now (and forget it). */
  remove(dir: string): void {
    fs.rmSync(dir, { recursive: true, force: true });
    this.dirs.delete(dir);
  }

  list(): string[] {
    return [...this.dirs];
  }

  /** Remove every remembered directory. REGTAPE_KEEP=1 keeps them (for looking at logs). */
  removeAll(): void {
    if (process.env.REGTAPE_KEEP === '1') {
      if (this.dirs.size) process.stderr.write(`REGTAPE_KEEP=1: kept ${[...this.dirs].join(' ')}\n`);
      this.dirs.clear();
      return;
    }
    for (const d of this.dirs) fs.rmSync(d, { recursive: true, force: true });
    this.dirs.clear();
  }
}

export const defaultTempDirs = new TempDirs();
process.once('exit', () => defaultTempDirs.removeAll());
