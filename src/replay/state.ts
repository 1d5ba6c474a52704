/**
 * What a replay run changed in the registry it plays: blobs uploaded, blobs and manifests deleted.
 * Only recorded answers change it (a 201 to a finished upload, a 202 to a DELETE), and only derived
 * answers read it: a recorded answer always wins over what the run state would say.
 */
import { headerValue } from '../fixture/model';
import { LoadedExchange } from '../fixture/files';
import { Route } from '../registry/routes';

export class RunState {
  /** `repo@digest` of blobs uploaded in this run, with their sizes. */
  private uploaded = new Map<string, number>();
  private deletedBlobs = new Set<string>();
  private deletedManifests = new Set<string>();

  blobUploaded(repo: string, digest: string, size: number): void {
    this.uploaded.set(`${repo}@${digest}`, size);
    this.deletedBlobs.delete(`${repo}@${digest}`);
  }

  uploadedSize(repo: string, digest: string): number | undefined {
    return this.uploaded.get(`${repo}@${digest}`);
  }

  blobDeleted(repo: string, digest: string): boolean {
    return this.deletedBlobs.has(`${repo}@${digest}`);
  }

  manifestDeleted(repo: string, digest: string): boolean {
    return this.deletedManifests.has(`${repo}@${digest}`);
  }

  /** After a recorded answer was served for this request: what it changed in the registry. */
  served(method: string, route: Route, ex: LoadedExchange): void {
    const status = ex.response?.status;
    if (method === 'DELETE' && status === 202 && route.kind === 'blob') {
      this.deletedBlobs.add(`${route.name}@${route.digest}`);
      this.uploaded.delete(`${route.name}@${route.digest}`);
    } else if (method === 'DELETE' && status === 202 && route.kind === 'manifest' && route.reference.includes(':')) {
      this.deletedManifests.add(`${route.name}@${route.reference}`);
    } else if (method === 'PUT' && status === 201 && route.kind === 'manifest') {
      const digest = headerValue(ex.response!.headers, 'docker-content-digest');
      if (digest) this.deletedManifests.delete(`${route.name}@${digest}`);
    }
  }
}
