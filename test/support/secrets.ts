import * as fs from 'node:fs';
import * as path from 'node:path';

const JWT = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}/;

/** Every file under dir (fixtures and stored bodies) searched for the given secrets and for JWTs. */
export function findSecrets(dir: string, secrets: string[]): string[] {
  const hits: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const text = fs.readFileSync(p).toString('latin1');
        for (const s of secrets) if (text.includes(s)) hits.push(`${p}: ${s}`);
        const m = JWT.exec(text);
        if (m) hits.push(`${p}: JWT ${m[0].slice(0, 30)}…`);
      }
    }
  };
  walk(dir);
  return hits;
}

/** The passwords, their Basic encodings and URL-encoded forms. */
export function credentialForms(users: Record<string, { password: string }>): string[] {
  const out: string[] = [];
  for (const [u, { password }] of Object.entries(users)) {
    out.push(password, Buffer.from(`${u}:${password}`).toString('base64'), encodeURIComponent(password));
  }
  return out;
}

export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name), path.join(rel, e.name));
      else out.push(path.join(rel, e.name));
    }
  };
  walk(dir, '');
  return out.sort();
}
