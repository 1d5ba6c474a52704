export * from './ports';
export * from './run';
export * from './procs';
export * from './tmp';
export * from './x509';
export * from './token-server';
export * from './blob-cdn';
export * from './registry';
export * from './image';
export * from './clients';

import { ClientOptions, pullToDir } from './clients';
import { Image, ImageOptions, makeImage } from './image';
import { Procs } from './procs';
import { Registry, RegistryOptions, startRegistry } from './registry';
import { TempDirs } from './tmp';

/**
 * Owns what one test file starts: processes (procs), registries and temp dirs.
 *   const h = new Harness(); afterAll(() => h.cleanup());
 *   const reg = await h.startRegistry({ mode: 'token' });
 */
export class Harness {
  readonly tmp = new TempDirs();
  readonly procs = new Procs({ tmp: this.tmp });
  readonly registries: Registry[] = [];
  private readonly cleanups: Array<() => Promise<void> | void> = [];

  async startRegistry(opts: RegistryOptions): Promise<Registry> {
    const r = await startRegistry({ tmp: this.tmp, ...opts });
    this.registries.push(r);
    return r;
  }

  makeImage(opts: ImageOptions = {}): Promise<Image> {
    return makeImage({ tmp: this.tmp, ...opts });
  }

  pullToDir(src: string, creds?: string, opts: ClientOptions = {}): Promise<{ dir: string; manifestBytes: Buffer }> {
    return pullToDir(src, creds, { tmp: this.tmp, ...opts });
  }

  /** a fresh temp dir, removed by cleanup() */
  tempDir(prefix = 'tmp'): string {
    return this.tmp.make(prefix);
  }

  /** run fn during cleanup() (before processes are stopped), e.g. to close a server the test started */
  onCleanup(fn: () => Promise<void> | void): void {
    this.cleanups.push(fn);
  }

  /** Stop everything started through this harness and remove its temp dirs. Safe to call twice. */
  async cleanup(): Promise<void> {
    const errors: unknown[] = [];
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (e) {
        errors.push(e);
      }
    }
    const settled = await Promise.allSettled([...this.registries.splice(0).map((r) => r.stop()), this.procs.stopAll()]);
    for (const s of settled) if (s.status === 'rejected') errors.push(s.reason);
    this.tmp.removeAll();
    if (errors.length) throw errors[0];
  }
}
export * from './dockerd';
export * from './podman';
export * from './containerd';
export * from './tls-names';
