/**
 * Pushes during replay. The recorded upload session is played back (its statuses and Locations),
 * with fresh session ids, and what the client uploads is checked: the bytes must hash to the
 * `digest` parameter, the blob must be one the recording pushed, a pushed manifest must be the
 * recorded one. State is kept within a run: a blob uploaded answers HEAD 200 afterwards, like the
 * recorded registry.
 */
import { createHash, Hash, randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { LoadedExchange } from '../fixture/files';
import { Body, bodyDigest } from '../fixture/model';
import { errorBody } from '../registry/errors';
import { Route, routeOf } from '../registry/routes';
import { fillUploads } from '../registry/uploads';
import { splitUrl } from '../fixture/identity';

export interface Refusal {
  status: number;
  body: string;
}

interface Session {
  hash: Hash;
  size: number;
}

export class PushState {
  private sessions = new Map<string, Session>();
  /** `repo@digest` of blobs uploaded in this run, with their sizes. */
  private uploaded = new Map<string, number>();
  /** Digests of blobs the recording pushed (PUT ...?digest=), per repository. */
  private recordedBlobs = new Map<string, Set<string>>();

  /** Repositories the recording pushed to (uploads or manifests). */
  private pushedRepos = new Set<string>();

  constructor(exchanges: LoadedExchange[]) {
    for (const ex of exchanges) this.add(ex);
  }

  add(ex: LoadedExchange): void {
    const { path, query } = splitUrl(ex.request.url);
    const route = routeOf(path);
    if (route.kind === 'upload' || (route.kind === 'manifest' && ex.request.method === 'PUT')) this.pushedRepos.add(route.name);
    const digest = new URLSearchParams(query).get('digest');
    if (route.kind === 'upload' && digest && (ex.request.method === 'PUT' || ex.request.method === 'POST')) {
      let set = this.recordedBlobs.get(route.name);
      if (!set) this.recordedBlobs.set(route.name, (set = new Set()));
      set.add(digest);
    }
  }

  recordedPushTo(repo: string): boolean {
    return this.pushedRepos.has(repo);
  }

  /** Hashes an upload request's body into its session (streamed; nothing is kept). */
  receive(req: IncomingMessage, session: string): Promise<void> {
    let s = this.sessions.get(session);
    if (!s) this.sessions.set(session, (s = { hash: createHash('sha256'), size: 0 }));
    const state = s;
    return new Promise((resolve, reject) => {
      req.on('data', (c: Buffer) => {
        state.hash.update(c);
        state.size += c.length;
      });
      req.on('end', () => resolve());
      req.on('error', reject);
    });
  }

  /**
   * Checks a finished upload (PUT or POST with `digest=`): the bytes against the parameter, the
   * digest against the recording. Returns a registry error to send instead of the recorded answer.
   */
  finish(session: string, route: Route & { kind: 'upload' }, digest: string): Refusal | undefined {
    const s = this.sessions.get(session);
    if (!s) return undefined;
    this.sessions.delete(session);
    const actual = 'sha256:' + s.hash.digest('hex');
    if (digest.startsWith('sha256:') && actual !== digest) {
      return refusal(400, 'DIGEST_INVALID', `regtape: the uploaded bytes (${s.size}) hash to ${actual}, but the digest parameter says ${digest}`);
    }
    const recorded = this.recordedBlobs.get(route.name);
    if (recorded && !recorded.has(digest)) {
      return refusal(400, 'DIGEST_INVALID', `regtape: pushed blob ${digest} to ${route.name} differs from the recording, which pushed ${[...recorded].join(', ')}`);
    }
    this.uploaded.set(`${route.name}@${digest}`, s.size);
    return undefined;
  }

  /** Size of a blob uploaded in this run, for HEAD answers after the push. */
  uploadedSize(repo: string, digest: string): number | undefined {
    return this.uploaded.get(`${repo}@${digest}`);
  }

  /** A manifest PUT must carry the recorded manifest, byte for byte. */
  checkManifest(bytes: Buffer, recorded: Body, repo: string, reference: string): Refusal | undefined {
    const actual = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
    const expected = bodyDigest(recorded);
    if (expected && actual !== expected) {
      return refusal(400, 'MANIFEST_INVALID', `regtape: pushed manifest ${repo}:${reference} is ${actual}, the recording pushed ${expected}`);
    }
    return undefined;
  }

  /** Session id and state for the placeholders in a recorded upload response. */
  fill(value: string, session: string | undefined): string {
    return fillUploads(value, session ?? randomUUID(), 'regtape');
  }
}

function refusal(status: number, code: string, message: string): Refusal {
  return { status, body: errorBody(code, message) };
}
