/** The upstream registry: parsing `--upstream` and checking at start that it answers. */
import * as http from 'node:http';
import * as https from 'node:https';
import { UserError } from '../http/server';

export const DEFAULT_UPSTREAM = 'https://registry-1.docker.io';

export function parseUpstream(s: string): URL {
  let u: URL;
  try {
    u = new URL(/^[a-z]+:\/\//i.test(s) ? s : `https://${s}`);
  } catch {
    throw new UserError(`--upstream ${JSON.stringify(s)} is not a URL (e.g. https://registry-1.docker.io or http://127.0.0.1:5000)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UserError(`--upstream must be http:// or https://, not ${u.protocol}`);
  return u;
}

/** Checks that the upstream answers `/v2/`; resolves with its Bearer challenge, if any. */
export async function checkUpstream(u: URL): Promise<string | undefined> {
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise<string | undefined>((resolve, reject) => {
    const req = mod.request(new URL('/v2/', u), { method: 'GET', timeout: 10_000 }, (res) => {
      res.resume();
      const challenge = res.headers['www-authenticate'];
      resolve(Array.isArray(challenge) ? challenge[0] : challenge);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('no answer in 10 s'), { code: 'ETIMEDOUT' })));
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new UserError(
          /CERT|SSL|TLS/i.test(e.code ?? '')
            ? `upstream ${u.origin}: its TLS certificate is not trusted (${e.code}): for a private CA, start regtape with NODE_EXTRA_CA_CERTS=/path/to/ca.pem`
            : `upstream ${u.origin} is unreachable (${e.code ?? e.message}): check --upstream and the network`,
        ),
      ),
    );
    req.end();
  });
}
