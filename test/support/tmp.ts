import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Temp folders for a unit test file, removed after all its tests. */
export function unitTempDirs(): () => string {
  const made: string[] = [];
  afterAll(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
  return () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'regtape-unit-'));
    made.push(d);
    return d;
  };
}
