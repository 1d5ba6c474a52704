import type { Readable, Writable } from 'node:stream';

/**
 * Copies `source` into two writables with backpressure from both (the client and the body sink):
 * nothing is buffered beyond the streams' own high-water marks. Resolves true when the source
 * ended and both writables finished, false when the source or the client went away first.
 */
export function tee(source: Readable, client: Writable, sink: Writable): Promise<boolean> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      if (!ok) {
        source.destroy();
        client.destroy();
      }
      resolve(ok);
    };
    let waiting = 0;
    const resume = (): void => {
      if (--waiting === 0) source.resume();
    };
    source.on('data', (chunk: Buffer) => {
      const a = client.write(chunk);
      const b = sink.write(chunk);
      if (!a) {
        waiting++;
        client.once('drain', resume);
      }
      if (!b) {
        waiting++;
        sink.once('drain', resume);
      }
      if (waiting > 0) source.pause();
    });
    source.on('end', () => {
      let ended = 0;
      const one = (): void => {
        if (++ended === 2) finish(true);
      };
      client.end(one);
      sink.end(one);
    });
    source.on('aborted', () => finish(false));
    // The body could not be kept (disk full, folder gone): the exchange cannot be recorded; cut it.
    sink.on('error', () => finish(false));
    source.on('error', () => finish(false));
    client.on('close', () => {
      if (!(client as Writable & { writableFinished: boolean }).writableFinished) finish(false);
    });
  });
}
