/**
 * Fault injection: make the replayed registry misbehave on purpose, so a client's retry and error
 * paths can be tested. Each fault is one registry behaviour seen in the wild:
 *   toomanyrequests  429 TOOMANYREQUESTS with Retry-After and Docker Hub's rate-limit headers
 *   unavailable      503 UNAVAILABLE
 *   cut              the response body stops after N bytes and the connection is closed
 *   expire-token     401 with a Bearer challenge `error="invalid_token"`: the token "expired"
 * A rule picks requests by method, route kind or path pattern, and optionally only the n-th of them.
 */
import { promises as fsp } from 'node:fs';
import type * as YamlLib from 'yaml';
import { HeaderList, ORIGIN_PLACEHOLDER } from '../fixture/model';
import { ownRealmChallenge } from '../registry/auth';
import { UserError } from '../http/server';
import { errorBody } from '../registry/errors';
import { Route } from '../registry/routes';
import { RequestView } from '../fixture/identity';

export type FaultKind = 'toomanyrequests' | 'unavailable' | 'cut' | 'expire-token';
const KINDS: Record<string, FaultKind> = {
  toomanyrequests: 'toomanyrequests',
  '429': 'toomanyrequests',
  unavailable: 'unavailable',
  '503': 'unavailable',
  cut: 'cut',
  'expire-token': 'expire-token',
  '401': 'expire-token',
};
const ROUTES = new Set(['ping', 'manifest', 'blob', 'upload', 'tags', 'catalog', 'referrers', 'token', 'redirect', 'other']);

export interface FaultRule {
  fault: FaultKind;
  method?: string;
  route?: Route['kind'];
  /** A regular expression on the request path. */
  path?: string;
  /** Only the n-th matching request (1-based); every matching request when absent. */
  nth?: number;
  /** cut: bytes of body sent before the connection is closed. */
  bytes?: number;
  /** toomanyrequests: seconds in Retry-After (default 1). */
  retryAfter?: number;
}

/** What the server does about a fault on this request. */
export type FaultAction = { respond: { status: number; headers: HeaderList; body: string } } | { cutAfter: number };

/**
 * Parses `KIND[=ARG][@[METHOD:]TARGET][#N]`, TARGET a route kind or a path pattern starting with '/':
 *   429@GET:manifest#2   503@/v2/demo/hello/manifests/v1   cut=1024@blob#1   expire-token#4
 */
export function parseFaultFlag(spec: string): FaultRule {
  const m = /^([a-z0-9-]+)(?:=(\d+))?(?:@(?:([A-Za-z]+):)?([^#]+))?(?:#(\d+))?$/.exec(spec.trim());
  const kind = m && KINDS[m[1]];
  if (!m || !kind) {
    throw new UserError(`--fault ${JSON.stringify(spec)}: expected KIND[=ARG][@[METHOD:]TARGET][#N], KIND one of toomanyrequests (429), unavailable (503), cut=BYTES, expire-token; e.g. 429@GET:manifest#2`);
  }
  const rule: FaultRule = { fault: kind };
  if (m[2] !== undefined) {
    if (kind === 'cut') rule.bytes = Number(m[2]);
    else if (kind === 'toomanyrequests') rule.retryAfter = Number(m[2]);
  }
  if (kind === 'cut' && rule.bytes === undefined) throw new UserError(`--fault ${spec}: cut needs a byte count, e.g. cut=1024@blob`);
  if (m[3]) rule.method = m[3].toUpperCase();
  if (m[4]) {
    if (m[4].startsWith('/')) rule.path = m[4];
    else if (ROUTES.has(m[4])) rule.route = m[4] as Route['kind'];
    else throw new UserError(`--fault ${spec}: target ${JSON.stringify(m[4])} is neither a route (${[...ROUTES].join(', ')}) nor a path starting with /`);
  }
  if (m[5]) rule.nth = Number(m[5]);
  return validate(rule, `--fault ${spec}`);
}

/** The keys a rule in a rules file may have, and what each must be. */
const RULE_KEYS: Record<string, string> = {
  fault: 'toomanyrequests, unavailable, cut or expire-token (or 429, 503, 401)',
  method: 'an HTTP method, e.g. GET',
  route: [...ROUTES].join(', '),
  path: 'a regular expression on the request path, e.g. ^/v2/demo/',
  nth: 'a whole number >= 1',
  bytes: 'a whole number of bytes >= 0 (cut)',
  retryAfter: 'a whole number of seconds >= 0 (toomanyrequests)',
};

/**
 * A rules file: `faults: [{fault: toomanyrequests, method: GET, route: manifest, nth: 2}, ...]`.
 * Anything it cannot take (an unknown key such as `rout:`, a bad value) is refused with file:line:
 * a typo must never widen a rule into a fault on every request.
 */
export async function loadFaultRules(file: string): Promise<FaultRule[]> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    throw new UserError(`cannot read the faults file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  // Loaded when a faults file is read: replay without one never loads the YAML library.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const YAML = require('yaml') as typeof YamlLib;
  const { isMap, isScalar, isSeq, LineCounter } = YAML;
  const lc = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lc });
  const at = (node: unknown): string => {
    const range = (node as { range?: [number, number, number] } | null)?.range;
    return `${file}:${range ? lc.linePos(range[0]).line : 1}`;
  };
  if (doc.errors.length) {
    const e = doc.errors[0];
    throw new UserError(`${file}:${e.linePos?.[0].line ?? 1}: ${e.message.split('\n')[0]}`);
  }
  const list = isMap(doc.contents) ? doc.contents.get('faults', true) : undefined;
  if (!isMap(doc.contents)) throw new UserError(`${at(doc.contents)}: expected 'faults:' with a list of rules`);
  for (const pair of doc.contents.items) {
    const k = isScalar(pair.key) ? String(pair.key.value) : '?';
    if (k !== 'faults') throw new UserError(`${at(pair.key)}: unknown key ${JSON.stringify(k)}: the file holds only 'faults:' (a list of rules)`);
  }
  if (!isSeq(list)) throw new UserError(`${at(list ?? doc.contents)}: expected 'faults:' to be a list of rules`);
  return list.items.map((item, i) => {
    const where = `${at(item)}: rule ${i + 1}`;
    if (!isMap(item)) throw new UserError(`${where}: expected a mapping such as {fault: toomanyrequests, route: manifest, nth: 1}`);
    const raw: Record<string, unknown> = {};
    for (const pair of item.items) {
      const k = isScalar(pair.key) ? String(pair.key.value) : '?';
      const here = `${at(pair.key)}: rule ${i + 1}`;
      if (!(k in RULE_KEYS)) throw new UserError(`${here}: unknown key ${JSON.stringify(k)} (a rule has ${Object.keys(RULE_KEYS).join(', ')})`);
      const v = isScalar(pair.value) ? pair.value.value : undefined;
      const bad = (): never => {
        throw new UserError(`${at(pair.value ?? pair.key)}: rule ${i + 1}: ${k} must be ${RULE_KEYS[k]}, not ${JSON.stringify(isScalar(pair.value) ? pair.value.value : String(pair.value)).slice(0, 60)}`);
      };
      if (k === 'fault') {
        if (!KINDS[String(v)]) bad();
        raw.fault = KINDS[String(v)];
      } else if (k === 'method') {
        if (typeof v !== 'string' || !/^[A-Za-z]+$/.test(v)) bad();
        raw.method = (v as string).toUpperCase();
      } else if (k === 'route') {
        if (typeof v !== 'string' || !ROUTES.has(v)) bad();
        raw.route = v;
      } else if (k === 'path') {
        if (typeof v !== 'string' || !isRegExp(v)) bad();
        raw.path = v;
      } else {
        const min = k === 'nth' ? 1 : 0;
        if (typeof v !== 'number' || !Number.isInteger(v) || v < min) bad();
        raw[k] = v;
      }
    }
    if (!raw.fault) throw new UserError(`${where}: no 'fault:' (${RULE_KEYS.fault})`);
    if (raw.fault === 'cut' && raw.bytes === undefined) throw new UserError(`${where}: cut needs bytes, e.g. {fault: cut, bytes: 1024, route: blob}`);
    if (raw.bytes !== undefined && raw.fault !== 'cut') throw new UserError(`${where}: bytes is only for cut`);
    if (raw.retryAfter !== undefined && raw.fault !== 'toomanyrequests') throw new UserError(`${where}: retryAfter is only for toomanyrequests`);
    return validate(raw as unknown as FaultRule, where);
  });
}

function isRegExp(s: string): boolean {
  try {
    new RegExp(s);
    return true;
  } catch {
    return false;
  }
}

function validate(rule: FaultRule, where: string): FaultRule {
  if (rule.path !== undefined) {
    try {
      new RegExp(rule.path);
    } catch {
      throw new UserError(`${where}: path ${JSON.stringify(rule.path)} is not a valid regular expression`);
    }
  }
  if (rule.nth !== undefined && (!Number.isInteger(rule.nth) || rule.nth < 1)) throw new UserError(`${where}: nth must be 1 or more`);
  if (rule.fault === 'cut' && (!Number.isInteger(rule.bytes) || (rule.bytes as number) < 0)) throw new UserError(`${where}: cut needs bytes >= 0`);
  return rule;
}

export class FaultInjector {
  private counts: number[];
  private patterns: Array<RegExp | undefined>;

  constructor(
    private readonly rules: FaultRule[],
    /** The recorded Bearer challenge, to re-challenge with when a token "expires". */
    private readonly challenge: () => string | undefined,
  ) {
    this.counts = rules.map(() => 0);
    this.patterns = rules.map((r) => (r.path ? new RegExp(r.path) : undefined));
  }

  get active(): boolean {
    return this.rules.length > 0;
  }

  /** The fault this request meets, if any. Counting happens here: call once per request. */
  check(req: RequestView, route: Route, origin: string): FaultAction | undefined {
    const path = req.url.split('?')[0];
    for (let i = 0; i < this.rules.length; i++) {
      const r = this.rules[i];
      if (r.method && r.method !== req.method.toUpperCase()) continue;
      if (r.route && r.route !== route.kind) continue;
      if (this.patterns[i] && !this.patterns[i]!.test(path)) continue;
      if (r.fault === 'expire-token' && !req.headers.some(([n, v]) => n.toLowerCase() === 'authorization' && /^\s*bearer\s/i.test(v))) continue;
      const n = ++this.counts[i];
      if (r.nth !== undefined && n !== r.nth) continue;
      return this.action(r, route, origin);
    }
    return undefined;
  }

  private action(r: FaultRule, route: Route, origin: string): FaultAction {
    const api: [string, string] = ['Docker-Distribution-Api-Version', 'registry/2.0'];
    const json: [string, string] = ['Content-Type', 'application/json'];
    switch (r.fault) {
      case 'cut':
        return { cutAfter: r.bytes ?? 0 };
      case 'toomanyrequests':
        return {
          respond: {
            status: 429,
            headers: [json, api, ['Retry-After', String(r.retryAfter ?? 1)], ['RateLimit-Limit', '100;w=21600'], ['RateLimit-Remaining', '0;w=21600']],
            body: errorBody('TOOMANYREQUESTS', 'You have reached your pull rate limit. (regtape fault injection)'),
          },
        };
      case 'unavailable':
        return { respond: { status: 503, headers: [json, api], body: errorBody('UNAVAILABLE', 'service unavailable (regtape fault injection)') } };
      case 'expire-token': {
        const challenge = this.challenge()?.split(ORIGIN_PLACEHOLDER).join(origin);
        const recorded = challenge === undefined ? undefined : ownRealmChallenge(challenge, origin);
        const scope = 'name' in route ? `,scope="repository:${route.name}:pull"` : '';
        const base = recorded?.replace(/,\s*error="[^"]*"/, '') ?? `Bearer realm="${origin}/__regtape/token/none"`;
        return {
          respond: {
            status: 401,
            headers: [json, api, ['WWW-Authenticate', `${base}${/scope=/.test(base) ? '' : scope},error="invalid_token"`]],
            body: errorBody('UNAUTHORIZED', 'authentication required: the token has expired (regtape fault injection)'),
          },
        };
      }
    }
  }
}

/** `--latency 50` or `--latency 20-200` (milliseconds, a range draws uniformly). */
export function parseLatency(spec: string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(spec.trim());
  if (!m || (m[2] !== undefined && Number(m[2]) < Number(m[1]))) throw new UserError(`--latency ${JSON.stringify(spec)}: expected milliseconds, e.g. 50 or 20-200`);
  return [Number(m[1]), Number(m[2] ?? m[1])];
}
