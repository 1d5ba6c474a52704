/**
 * The bench's peer servers, each run as its own process by bench.ts:
 *
 *   node peers.js talkback record UPSTREAM PORT TAPES   talkback 4 recording UPSTREAM into TAPES
 *   node peers.js talkback replay UPSTREAM PORT TAPES   talkback 4 replaying TAPES (no upstream reached)
 *   node peers.js bare PORT ANSWER.json                 a bare node:http server sending one recorded answer
 *
 * Each prints one line on stdout once it listens. The bare server is the ceiling for a Node server on
 * this machine: it answers every request with the same status, headers and bytes, doing nothing else.
 */
import * as fs from 'fs';
import * as http from 'http';
import talkback from 'talkback';

const [kind, ...args] = process.argv.slice(2);

if (kind === 'talkback') {
  const [mode, upstream, port, tapes] = args;
  const server = talkback({
    host: upstream,
    port: Number(port),
    path: tapes,
    record: mode === 'record' ? talkback.Options.RecordMode.NEW : talkback.Options.RecordMode.DISABLED,
    fallbackMode: talkback.Options.FallbackMode.NOT_FOUND,
    // talkback matches on every request header but these; the bench's load (wrk) sends Host and Accept only.
    ignoreHeaders: ['connection', 'user-agent'],
    silent: true,
    summary: false,
  });
  void server.start(() => process.stdout.write(`talkback ${mode} on http://127.0.0.1:${port}\n`));
} else if (kind === 'bare') {
  const [port, answerFile] = args;
  const answer = JSON.parse(fs.readFileSync(answerFile, 'utf8')) as { status: number; headers: string[]; body: string };
  const body = Buffer.from(answer.body, 'base64');
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(answer.status, answer.headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  server.keepAliveTimeout = 120_000;
  server.listen(Number(port), '127.0.0.1', () => process.stdout.write(`bare node:http on http://127.0.0.1:${port}\n`));
  process.on('SIGTERM', () => process.exit(0));
} else {
  process.stderr.write('usage: peers.js talkback record|replay UPSTREAM PORT TAPES | peers.js bare PORT ANSWER.json\n');
  process.exit(2);
}
