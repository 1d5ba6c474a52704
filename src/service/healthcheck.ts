/**
 * The container image's HEALTHCHECK: GET /__regtape/health on the port regtape listens on, exit 0 on
 * 200. The port follows regtape's own: `--port N` on its command line, else $REGTAPE_PORT in its
 * environment, else 8000. Both are read from /proc, so `docker run IMAGE replay /fixtures --port 9000`
 * and `docker run -e REGTAPE_PORT=9000 IMAGE` are checked on 9000 without configuring the check.
 * Loads nothing of regtape: it runs every few seconds.
 */
import * as fs from 'node:fs';
import * as http from 'node:http';

interface Target {
  host: string;
  port: number;
}

/** The listening address from regtape's argv (after `cli.js`, before `--`) and environment. */
export function targetOf(args: string[], env: Record<string, string>): Target {
  let host = '127.0.0.1';
  let port = Number(env.REGTAPE_PORT ?? 8000);
  for (let i = 0; i < args.length && args[i] !== '--'; i++) {
    const [flag, inline] = args[i].startsWith('--') && args[i].includes('=') ? [args[i].slice(0, args[i].indexOf('=')), args[i].slice(args[i].indexOf('=') + 1)] : [args[i], undefined];
    const value = (): string | undefined => inline ?? args[++i];
    if (flag === '--port') port = Number(value());
    else if (flag === '--host') host = value() ?? host;
  }
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1';
  if (host === '::') host = '::1';
  return { host, port };
}

/** regtape's process in this container: the oldest whose argv[1] is a regtape cli.js. */
function findRegtape(): { args: string[]; env: Record<string, string> } | undefined {
  const pids = fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)
    .map(Number)
    .sort((a, b) => a - b);
  for (const pid of pids) {
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone, or not ours
    }
    const at = argv.findIndex((a) => /(^|\/)(dist\/cli\.js|regtape)$/.test(a));
    if (at < 0 || at > 1) continue;
    const env: Record<string, string> = {};
    try {
      for (const kv of fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
        const eq = kv.indexOf('=');
        if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
      }
    } catch {
      /* another user's process: its environment is not readable; the defaults apply */
    }
    return { args: argv.slice(at + 1), env };
  }
  return undefined;
}

function check(t: Target): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host: t.host, port: t.port, path: '/__regtape/health', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? undefined : `HTTP ${res.statusCode}`);
    });
    req.on('timeout', () => req.destroy(new Error('no answer in 2 s')));
    req.on('error', (e) => resolve(e.message));
  });
}

if (require.main === module) {
  const found = findRegtape();
  if (!found) {
    process.stdout.write('regtape health: no regtape process found\n');
    process.exit(1);
  }
  const t = targetOf(found.args, found.env);
  void check(t).then((problem) => {
    process.stdout.write(problem ? `regtape health: ${t.host}:${t.port}: ${problem}\n` : `regtape health: ok on ${t.host}:${t.port}\n`);
    process.exit(problem ? 1 : 0);
  });
}
