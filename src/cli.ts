#!/usr/bin/env node
/** The command line: parses flags and calls the library. Nothing else lives here. */
import { Command, InvalidArgumentError, CommanderError } from 'commander';
import { record, DEFAULT_UPSTREAM } from './record/proxy';
import { replay } from './replay/server';
import { FixtureError } from './fixture/model';
import { FixturePathError } from './fixture/files';
import { UserError } from './http/server';

const out = (s: string): void => void process.stdout.write(s + '\n');
const err = (s: string): void => void process.stderr.write(s + '\n');

function port(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n > 65535) throw new InvalidArgumentError('expected a port number 0-65535 (0 picks a free one)');
  return n;
}

function format(v: string): 'md' | 'yaml' {
  if (v === 'md' || v === 'markdown') return 'md';
  if (v === 'yaml' || v === 'yml') return 'yaml';
  throw new InvalidArgumentError("expected 'md' or 'yaml'");
}

/** Stops on SIGINT/SIGTERM after `close` finished, exit 0. */
function onSignals(close: () => Promise<void>): void {
  let closing = false;
  const handler = (sig: string): void => {
    if (closing) return;
    closing = true;
    err(`regtape: ${sig}, finishing in-flight exchanges`);
    close().then(
      () => process.exit(0),
      (e: Error) => {
        err(`regtape: ${e.message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => handler('SIGINT'));
  process.on('SIGTERM', () => handler('SIGTERM'));
}

export function program(): Command {
  const prog = new Command('regtape')
    .description('Record and replay the container registry API: offline, byte-exact registry test doubles.')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .showHelpAfterError('(run with --help for usage)');

  prog
    .command('record')
    .description('proxy a registry and write every exchange as a fixture')
    .option('--upstream <url>', 'the registry to record', DEFAULT_UPSTREAM)
    .option('--port <n>', 'port to listen on', port, 8000)
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--out <dir>', 'folder to write fixtures into', 'fixtures')
    .option('--format <md|yaml>', 'fixture format', format, 'md')
    .option('--redact-header <name...>', 'also redact these headers (Authorization, Cookie, Set-Cookie are always redacted)')
    .option('--redact-query <name...>', 'also redact these query parameters in recorded URLs (account and URL signatures always are)')
    .option('--redact-field <name...>', 'also redact these JSON fields in token responses and form fields in token requests')
    .addHelpText(
      'after',
      `
Example:
  $ regtape record --upstream http://127.0.0.1:5000 --out fixtures/hello
  $ skopeo copy --src-tls-verify=false docker://127.0.0.1:8000/demo/hello:v1 dir:/tmp/hello
  (Ctrl-C stops after the in-flight exchanges are written)`,
    )
    .action(async (o: { upstream: string; port: number; host: string; out: string; format: 'md' | 'yaml'; redactHeader?: string[]; redactQuery?: string[]; redactField?: string[] }) => {
      const server = await record({
        upstream: o.upstream,
        port: o.port,
        host: o.host,
        out: o.out,
        format: o.format,
        redact: { headers: o.redactHeader, query: o.redactQuery, fields: o.redactField },
        log: err,
      });
      out(`regtape recording on ${server.url} -> ${server.upstream}, fixtures in ${server.out}`);
      onSignals(() => server.close());
    });

  prog
    .command('replay')
    .description('serve recorded fixtures as a registry, offline')
    .argument('<paths...>', 'fixture folders or files (folders are read recursively)')
    .option('--port <n>', 'port to listen on', port, 8000)
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--quiet', 'no line per request')
    .addHelpText(
      'after',
      `
Example:
  $ regtape replay examples/hello-pull
  $ skopeo inspect --tls-verify=false docker://127.0.0.1:8000/demo/hello:v1
  $ docker manifest inspect --insecure 127.0.0.1:8000/demo/hello:v1`,
    )
    .action(async (paths: string[], o: { port: number; host: string; quiet?: boolean }) => {
      const server = await replay({ fixtures: paths, port: o.port, host: o.host, log: o.quiet ? undefined : err });
      for (const ex of server.unservable) {
        err(`regtape: note: ${ex.source?.file}:${ex.source?.line}: ${ex.request.method} ${ex.request.url} has no recorded response; it is not served`);
      }
      out(`regtape replaying ${server.exchanges} exchanges from ${server.files.length} fixture files on ${server.url}`);
      onSignals(async () => {
        await server.close();
        const misses = server.unmatched();
        err(`regtape: served ${server.served()} requests, ${misses.length} unmatched, ${server.unused().length} fixtures unused`);
        for (const m of misses) err(`regtape: unmatched ${m.request}`);
      });
    });
  return prog;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander printed its message already; help and version are not errors.
      return e.exitCode === 0 || e.code === 'commander.helpDisplayed' || e.code === 'commander.help' ? 0 : 2;
    }
    if (e instanceof UserError || e instanceof FixtureError || e instanceof FixturePathError) {
      err(`regtape: ${e.message}`);
      return e instanceof FixtureError ? 3 : 2;
    }
    err(`regtape: unexpected error (please report it): ${(e as Error).stack ?? e}`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv).then((code) => {
    if (code !== 0) process.exit(code);
  });
}
