/**
 * Per-run noise, normalised when a fixture is written, so that recording the same pulls again gives
 * the same files: a re-recording's diff then shows only what the registry answered differently.
 * None of these values takes part in matching (replay/match.ts). The list is in docs/fixture-format.md;
 * `record --keep-noise` writes the raw values instead.
 */
import { Exchange, HeaderList, ORIGIN_PLACEHOLDER } from '../fixture/model';

/** What normalised token times and kernel versions become. */
export const NORMALISED = '<normalised>';

/**
 * A loopback host with a port, right after regtape's own token/redirect prefix: a token server or CDN
 * started on a free port (tests, local registries). The port changes on every run; the host does not.
 */
const LOCAL_TARGET = /(\/__regtape\/(?:token|redirect)\/https?\/)(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\]):\d{1,5}(?=[/?]|$)/g;
const LOCAL_ORIGIN = /^(https?:\/\/(?:127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|\[::1\])):\d{1,5}$/;
/** Absolute times in token responses (the token itself is redacted already). */
const TOKEN_TIMES = /("(?:issued_at|expires_at)"\s*:\s*)"[^"\\]*"/g;

/** `/__regtape/token/http/127.0.0.1:41234/token` → `/__regtape/token/http/127.0.0.1/token`. */
export function withoutLocalPorts(s: string): string {
  return s.includes('/__regtape/') ? s.replace(LOCAL_TARGET, '$1$2') : s;
}

/** `http://127.0.0.1:5000` → `http://127.0.0.1:<local port>`, for the fixture's comment line. */
export function describeOrigin(origin: string): string {
  return origin.replace(LOCAL_ORIGIN, '$1:<local port>');
}

/**
 * The exchange with per-run noise normalised:
 * - response `Date` dropped (replay sends the current time);
 * - `issued_at` / `expires_at` of token responses → `<normalised>` (replay serves fresh times anyway);
 * - the request's `Accept` lines sorted (docker sends them in a different order each run; matching
 *   uses the set);
 * - `kernel/<version>` in the docker daemon's User-Agent → `kernel/<normalised>`;
 * - ports of loopback token servers and CDNs in regtape's own URLs dropped (url, headers);
 * - the proxy's own origin in request headers (a redirect's `Referer`) → `http://regtape.invalid`.
 */
export function normaliseNoise(ex: Exchange, liveOrigin: string, tokenResponse: boolean): Exchange {
  const request = { ...ex.request, url: withoutLocalPorts(ex.request.url), headers: sortAccept(ex.request.headers.map(([n, v]) => [n, requestValue(n, v, liveOrigin)])) };
  if (!ex.response) return { ...ex, request };
  const r = ex.response;
  const headers: HeaderList = r.headers.filter(([n]) => n.toLowerCase() !== 'date').map(([n, v]) => [n, withoutLocalPorts(v)]);
  const body = tokenResponse && r.body.kind === 'inline' ? { kind: 'inline' as const, text: r.body.text.replace(TOKEN_TIMES, `$1"${NORMALISED}"`) } : r.body;
  return { ...ex, request, response: { ...r, headers, body } };
}

function requestValue(name: string, value: string, liveOrigin: string): string {
  // '' (the forward proxy): nothing of ours to replace.
  let v = liveOrigin && value.includes(liveOrigin) ? value.split(liveOrigin).join(ORIGIN_PLACEHOLDER) : value;
  if (name.toLowerCase() === 'user-agent') v = v.replace(/\bkernel\/[^\s)]+/, `kernel/${NORMALISED}`);
  return withoutLocalPorts(v);
}

/** Accept lines sorted in place: the other headers keep their positions. */
function sortAccept(headers: HeaderList): HeaderList {
  const at: number[] = [];
  headers.forEach(([n], i) => n.toLowerCase() === 'accept' && at.push(i));
  if (at.length < 2) return headers;
  const values = at.map((i) => headers[i][1]).sort();
  const out = headers.map(([n, v]) => [n, v] as [string, string]);
  at.forEach((i, k) => (out[i] = [headers[i][0], values[k]]));
  return out;
}
