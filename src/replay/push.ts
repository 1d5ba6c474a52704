/**
 * Pushes during replay. The recorded upload session is played back (its statuses and Locations),
 * with fresh session ids, and what the client uploads is checked: the bytes must hash to the
 * `digest` parameter, the blob must be one the recording pushed, a pushed manifest must be the
 * recorded one. A finished upload whose recorded answer was 201 counts as uploaded in this run
 * (state.ts): where the recording has no answer for a later HEAD of that blob, it is 200.
 */
import { createHash, Hash, randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { LoadedExchange } from '../fixture/files';
import { Body, bodyDigest } from '../fixture/model';
import { errorBody } from '../registry/errors';
import { Route, routeOf } from '../registry/routes';
import { fillUploads } from '../registry/uploads';
import { splitUrl } from '../fixture/identity';
import { RunState } from './state';

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
  /** Uploads whose bytes checked out, until their recorded answer says whether the registry took them. */
  private finished = new Map<string, { repo: string; digest: string; size: number }>();
  /** Digests of blobs the recording pushed (PUT ...?digest=), per repository. */
  private recordedBlobs = new Map<string, Set<string>>();

  /** Repositories the recording pushed to (uploads or manifests). */
  private pushedRepos = new Set<string>();

  constructor(
    exchanges: LoadedExchange[],
    private readonly state: RunState,
  ) {
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
    this.finished.set(session, { repo: route.name, digest, size: s.size });
    return undefined;
  }

  /** The recorded answer to a finished upload was served: a 201 means the registry has the blob now. */
  answered(session: string | undefined, status: number): void {
    const f = session === undefined ? undefined : this.finished.get(session);
    if (!f) return;
    this.finished.delete(session!);
    if (status === 201) this.state.blobUploaded(f.repo, f.digest, f.size);
  }

  /** A HEAD of a blob uploaded in this run, where the recording has no answer: 200, as the registry says. */
  headOfUploaded(route: Route, from: LoadedExchange['store']): LoadedExchange | undefined {
    if (route.kind !== 'blob') return undefined;
    const size = this.state.uploadedSize(route.name, route.digest);
    if (size === undefined) return undefined;
    return {
      request: { method: 'HEAD', url: '(derived)', headers: [], body: { kind: 'none' } },
      response: {
        status: 200,
        headers: [['Content-Length', String(size)], ['Content-Type', 'application/octet-stream'], ['Docker-Content-Digest', route.digest], ['Docker-Distribution-Api-Version', 'registry/2.0']],
        body: { kind: 'none' },
      },
      source: { file: '(uploaded in this run)', line: 0 },
      store: from,
    };
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
