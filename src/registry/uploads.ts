/**
 * Blob upload sessions (distribution spec, "Pushing blobs"). A registry names each session with a
 * fresh UUID and (distribution) an HMAC-signed `_state` holding a start time: both differ on every
 * run. Fixtures store them as placeholders; replay hands out fresh ones; matching ignores them.
 */
export const UPLOAD_ID = '<upload-uuid>';
export const UPLOAD_STATE = '<upload-state>';

const SESSION = /(\/blobs\/uploads\/)([^/?#\s<>]+)/g;
const STATE = /([?&]_state=)([^&#\s]*)/g;

/** Replaces session ids and `_state` values in a URL (or a header holding one) by placeholders. */
export function placeholderUploads(s: string): string {
  return s.replace(SESSION, `$1${UPLOAD_ID}`).replace(STATE, `$1${UPLOAD_STATE}`);
}

/** Fills a recorded upload URL's placeholders with a live session. */
export function fillUploads(s: string, session: string, state: string): string {
  return s.split(UPLOAD_ID).join(session).split(UPLOAD_STATE).join(state);
}
