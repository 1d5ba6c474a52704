/** Registry error codes (distribution spec, "Error Codes") and the statuses registries answer them with. */
export const ERROR_STATUS: Readonly<Record<string, number>> = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  MANIFEST_UNVERIFIED: 400,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  TAG_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 415,
  TOOMANYREQUESTS: 429,
  RANGE_INVALID: 416,
  PAGINATION_NUMBER_INVALID: 400,
  UNKNOWN: 500,
  UNAVAILABLE: 503,
};

/**
 * The status a registry would have sent with this body, for documents captured without a status
 * line (the seed): the first registry error code found, else 200.
 */
export function statusFromErrorBody(text: string): number {
  try {
    const parsed: unknown = JSON.parse(text);
    const errors = (parsed as { errors?: unknown }).errors;
    if (Array.isArray(errors)) {
      for (const e of errors) {
        const code = (e as { code?: unknown })?.code;
        if (typeof code === 'string' && code in ERROR_STATUS) return ERROR_STATUS[code];
      }
    }
  } catch {
    /* not JSON: not an error body */
  }
  return 200;
}

/** A registry-style error body: {"errors":[{code,message,detail}]}. */
export function errorBody(code: string, message: string, detail?: unknown): string {
  return JSON.stringify({ errors: [{ code, message, detail: detail ?? null }] });
}
