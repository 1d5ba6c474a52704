#!/usr/bin/env node
/** The command line: parses flags and calls the library. Nothing else lives here. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, InvalidArgumentError, CommanderError, Option } from 'commander';
import { record, DEFAULT_UPSTREAM } from './record/proxy';
import { replay, ReplayOptions, StrictReplayError } from './replay/server';
import { FaultRule, loadFaultRules, parseFaultFlag, parseLatency } from './replay/faults';
import { FixtureError } from './fixture/model';
import { FixturePathError } from './fixture/files';
import { UserError } from './http/server';
import { recordForward } from './proxy/record';
import { replayForward } from './proxy/replay';
import { formatListing, formatReport, ls, verify } from './inspect';
import { clientAddress, runCommand, splitExec } from './service/exec';
import { LogFormat, output, parseLogFormat, writeReport } from './service/output';
import { tlsFlagOptions, TlsFlags, caCommand, collect, tlsOption, tlsNameOption, tlsCertOption, tlsKeyOption, caDirOption } from './cli-tls';
import { refuseEmpty, refuseIdleReplayFlags, strictAndPaths } from './cli-checks';
import { drainTimeout, onRecordSignals, stderrLog, stderrProgress } from './cli-record';

const out = (s: string): void => void process.stdout.write(s + '\n');
const err = (s: string): void => void process.stderr.write(s + '\n');

/** The version in package.json (dist/ and src/ are both one level below it). */
function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

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
function onSignals(close: () => Promise<void>, say: (line: string) => void = err): void {
  let closing = false;
  const handler = (sig: string): void => {
    if (closing) return;
    closing = true;
    say(`regtape: ${sig}, finishing in-flight exchanges`);
    close().then(
      () => process.exit(0),
      (e: Error) => {
        say(`regtape: ${e instanceof UserError ? e.message : e.stack ?? e.message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => handler('SIGINT'));
  process.on('SIGTERM', () => handler('SIGTERM'));
}

interface ReplayFlags extends TlsFlags {
  port: number;
  host: string;
  quiet?: boolean;
  strict?: true | string;
  recordMissing?: boolean;
  upstream?: string;
  out?: string;
  format: 'md' | 'yaml';
  latency?: [number, number];
  fault?: FaultRule[];
  faults?: string;
  store?: string;
  allowEmpty?: boolean;
  report?: string;
  allowHost?: string[];
  logFormat: LogFormat;
  proxy?: boolean;
}

/** --port, defaulting to $REGTAPE_PORT, then 8000 (the container image's health check reads the same). */
const portOption = (): Option => new Option('--port <n>', 'port to listen on').argParser(port).default(8000).env('REGTAPE_PORT');

/** `exec`: the command after `--` of `regtape replay DIR -- CMD ARGS...` (see service/exec.ts). */
export function program(exec?: string[]): Command {
  const prog = new Command('regtape')
    .description('Record and replay the container registry API: offline, byte-exact registry test doubles.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .showHelpAfterError('(run with --help for usage)');

  prog
    .command('record')
    .description('proxy a registry and write every exchange as a fixture')
    .option('--upstream <url>', 'the registry to record', DEFAULT_UPSTREAM)
    .addOption(portOption())
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--out <dir>', 'folder to write fixtures into', 'fixtures')
    .option('--format <md|yaml>', 'fixture format', format, 'md')
    .option('--redact-header <name...>', 'also redact these headers (Authorization, Cookie, Set-Cookie are always redacted)')
    .option('--redact-query <name...>', 'also redact these query parameters in recorded URLs (account and URL signatures always are)')
    .option('--redact-field <name...>', 'also redact these JSON fields in token responses and form fields in token requests')
    .option('--overwrite', 'replace fixtures of requests recorded again (default: keep both, as a sequence)')
    .option('--allow-host <pattern>', 'accept this Host header value, and (record, --record-missing) forward token and redirect requests to this host, besides the upstream and what it names; with --proxy: the only hosts it may reach; * wildcards, e.g. *.cloudfront.net (repeatable)', collect)
    .option('--keep-noise', 'write per-run values as recorded (Date, token times, Accept order, kernel in User-Agent, local ports); default: normalised, so re-recording gives the same files')
    .option('--lfs', 'mark bodies for Git LFS in the .gitattributes written beside them (default: binary, no diff)')
    .option('--drain-timeout <seconds>', 'on Ctrl-C, wait at most this long for in-flight exchanges (default: until they finish; a second Ctrl-C stops at once)', drainTimeout)
    .option('--store <dir>', 'keep bodies in DIR (layout sha256/<hex>) instead of <out>/bodies/: a store shared by several fixture sets, e.g. a CI cache')
    .addOption(tlsOption()).addOption(tlsNameOption()).addOption(tlsCertOption()).addOption(tlsKeyOption()).addOption(caDirOption())
    .option('--upstream-ca <file>', 'trust these CA certificates (PEM) for upstreams, besides the system store and NODE_EXTRA_CA_CERTS')
    .option('--resolve <host=addr:port>', "connect to ADDR:PORT for HOST, TLS still verified for HOST (like curl's; repeatable)", collect)
    .option('--proxy', 'be a forward proxy (HTTPS_PROXY) for any registry, image names unchanged: each host recorded into <out>/<host>/')
    .addHelpText(
      'after',
      `
Example:
  $ regtape record --upstream http://127.0.0.1:5000 --out fixtures/hello
  $ skopeo copy --src-tls-verify=false docker://127.0.0.1:8000/demo/hello:v1 dir:/tmp/hello
  $ regtape record --proxy --out fixtures/ci        # any registry, names unchanged
  $ HTTPS_PROXY=http://127.0.0.1:8000 SSL_CERT_FILE=$(regtape ca | tail -1) skopeo copy docker://ghcr.io/org/app:v1 dir:/tmp/app
  (Ctrl-C stops after the in-flight exchanges are written, saying how far they are; a second Ctrl-C stops at once)`,
    )
    .action(async (o: TlsFlags & { upstream: string; port: number; host: string; out: string; format: 'md' | 'yaml'; redactHeader?: string[]; redactQuery?: string[]; redactField?: string[]; overwrite?: boolean; store?: string; keepNoise?: boolean; lfs?: boolean; allowHost?: string[]; drainTimeout?: number; proxy?: boolean }, cmd: Command) => {
      // What both recorders take from the flags.
      const common = {
        port: o.port,
        host: o.host,
        out: o.out,
        format: o.format,
        redact: { headers: o.redactHeader, query: o.redactQuery, fields: o.redactField },
        overwrite: o.overwrite,
        store: o.store,
        keepNoise: o.keepNoise,
        lfs: o.lfs,
        allowHosts: o.allowHost,
        resolve: o.resolve,
        upstreamCa: o.upstreamCa,
      };
      if (o.proxy) {
        if (cmd.getOptionValueSource('upstream') === 'cli') throw new UserError('--proxy records every host the client reaches; --upstream is for the reverse proxy: use one or the other');
        if (o.tls) throw new UserError("--tls serves HTTPS on a registry port; the forward proxy's port speaks plain HTTP (clients send CONNECT through it; their TLS is answered with regtape's CA either way)");
        const unsupported = o.tlsName ? '--tls-name' : o.tlsCert ? '--tls-cert' : o.tlsKey ? '--tls-key' : o.drainTimeout !== undefined ? '--drain-timeout' : undefined;
        if (unsupported) throw new UserError(`${unsupported} does nothing with --proxy (not supported in the forward proxy yet)`);
        const fwd = await recordForward({ ...common, caDir: o.caDir, log: err });
        onSignals(() => fwd.close());
        out(`regtape forward proxy recording on ${fwd.url} (clients: HTTPS_PROXY=${fwd.url}, trust ${fwd.caCertPath}), fixtures in ${fwd.out}/<host>/`);
        return;
      }
      const server = await record({ ...common, upstream: o.upstream, progress: stderrProgress(), tls: tlsFlagOptions(o), log: stderrLog });
      if (server.caCert) err(`regtape: HTTPS with a certificate from regtape's CA: clients must trust ${server.caCert}`);
      onRecordSignals(server, err, o.drainTimeout);
      out(`regtape recording on ${server.url} -> ${server.upstream}, fixtures in ${server.out}`);
    });

  prog
    .command('replay')
    .description('serve recorded fixtures as a registry, offline')
    .argument('[paths...]', 'fixture folders or files (folders are read recursively)')
    .addOption(portOption())
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--quiet', 'no line per request')
    .option('--strict [what]', "exit 1 at shutdown if a request went unmatched ('unused': also if a fixture went unused)")
    .option('--record-missing', 'forward requests with no fixture to --upstream and record them (into --out)')
    .option('--allow-host <pattern>', 'accept this Host header value, and (record, --record-missing) forward token and redirect requests to this host, besides the upstream and what it names; * wildcards, e.g. *.cloudfront.net (repeatable)', collect)
    .option('--upstream <url>', 'the registry for --record-missing')
    .option('--out <dir>', 'where --record-missing writes (default: the first fixtures folder)')
    .option('--format <md|yaml>', 'fixture format for --record-missing', format, 'md')
    .option('--latency <ms>', 'delay every answer: 50, or a range 20-200', parseLatency)
    .option('--fault <spec>', 'inject a registry fault, e.g. 429@GET:manifest#2, 503@/v2/x/manifests/v1, cut=1024@blob, expire-token#4 (repeatable)', (v: string, prev: FaultRule[] = []) => [...prev, parseFaultFlag(v)])
    .option('--faults <file>', 'a YAML file of fault rules (docs/faults.md)')
    .option('--report <file>', 'at shutdown, write the summary JSON (what GET /__regtape/summary answers) to this file')
    .addOption(new Option('--log-format <format>', "stderr as 'text' lines or 'json', one object per line").argParser(parseLogFormat).default('text'))
    .option('--store <dir>', 'read bodies from DIR, the store they were recorded into with record --store')
    .addOption(tlsOption()).addOption(tlsNameOption()).addOption(tlsCertOption()).addOption(tlsKeyOption()).addOption(caDirOption())
    .option('--upstream-ca <file>', 'with --record-missing: trust these CA certificates (PEM) for the upstream')
    .option('--resolve <host=addr:port>', 'with --record-missing: connect to ADDR:PORT for HOST, TLS still verified for HOST (repeatable)', collect)
    .option('--allow-empty', 'serve even when the paths hold no fixtures (default: an error)')
    .option('--proxy', 'be a forward proxy (HTTPS_PROXY) answering each host from its folder, as record --proxy wrote them')
    .addHelpText(
      'after',
      `
Example:
  $ regtape replay examples/hello-pull
  $ skopeo inspect --tls-verify=false docker://127.0.0.1:8000/demo/hello:v1
  $ docker manifest inspect --insecure 127.0.0.1:8000/demo/hello:v1
  $ regtape replay fixtures/ --strict                 # CI: exit 1 on any request with no fixture
  $ regtape replay fixtures/ --record-missing --upstream https://registry-1.docker.io
  $ regtape replay fixtures/ --fault 429@GET:manifest#1 --latency 20-100
  $ regtape replay fixtures/ --strict --report summary.json -- npm test   # runs the tests with REGTAPE_URL and
                                                                          # REGTAPE_HOST set, exits with their code`,
    )
    .action(async (args: string[], o: ReplayFlags, cmd: Command) => {
      const { paths, strict } = strictAndPaths(args, o.strict);

      refuseIdleReplayFlags(cmd, o.recordMissing);
      if (!o.recordMissing && (o.upstreamCa || o.resolve)) throw new UserError(`${o.upstreamCa ? '--upstream-ca' : '--resolve'} only applies with --record-missing (replay opens no connection otherwise)`);
      if (o.recordMissing && !o.upstream) throw new UserError('--record-missing needs --upstream URL (the registry to record what is missing from)');
      if (o.proxy && (o.upstream || o.recordMissing)) throw new UserError('--proxy replays offline from the host folders; --upstream and --record-missing are for the reverse proxy');
      const faults = [...(o.fault ?? []), ...(o.faults ? await loadFaultRules(o.faults) : [])];
      const io = output(o.logFormat, !!o.quiet, err);
      const replayOpts: ReplayOptions = {
        fixtures: paths,
        port: o.port,
        host: o.host,
        // --quiet drops the line per request; misses, refusals and errors are always shown.
        log: io.log,
        onRequest: io.onRequest,
        quiet: o.quiet,
        strict,
        latency: o.latency,
        faults,
        store: o.store,
        allowHosts: o.allowHost,
        recordMissing: o.recordMissing ? { upstream: o.upstream!, out: o.out, format: o.format, resolve: o.resolve, upstreamCa: o.upstreamCa } : undefined,
        tls: o.proxy ? undefined : tlsFlagOptions(o),
      };
      if (o.proxy && o.tls) throw new UserError("--tls serves HTTPS on a registry port; the forward proxy's port speaks plain HTTP (clients send CONNECT through it; their TLS is answered with regtape's CA either way)");
      const fwd = o.proxy ? await replayForward({ ...replayOpts, caDir: o.caDir }) : undefined;
      const server = fwd ?? (await replay(replayOpts));
      if (server.caCert) io.say(`regtape: HTTPS with a certificate from regtape's CA: clients must trust ${server.caCert}`);
      for (const ex of server.unservable) {
        io.say(`regtape: note: ${ex.source?.file}:${ex.source?.line}: ${ex.request.method} ${ex.request.url} has no recorded response; it is not served`, 'warn');
      }
      if (server.exchanges === 0 && !o.allowEmpty && !o.recordMissing) {
        await server.close().catch(() => undefined);
        refuseEmpty('replay', paths, server.files.length);
      }
      if (faults.length) io.say(`regtape: injecting ${faults.length} fault rule(s)`);
      /** Prints the summary, stops, writes --report; says why a strict run failed, if it did. */
      const shutdown = async (): Promise<string | undefined> => {
        const s = server.summary();
        io.say(`regtape: served ${s.served} requests, ${s.unmatchedTotal} unmatched, ${s.unused.length} fixtures unused${s.recorded.length ? `, ${s.recorded.length} recorded` : ''}`);
        for (const m of s.unmatched) io.say(`regtape: unmatched ${m.request}${m.count > 1 ? ` (x${m.count})` : ''}${m.nearest[0] ? ` (nearest ${m.nearest[0].request}: ${m.nearest[0].why})` : ''}`, 'warn');
        if (strict === 'unused') for (const u of s.unused) io.say(`regtape: unused ${u.source?.file}:${u.source?.line} ${u.request.method} ${u.request.url}`, 'warn');
        let failure: string | undefined;
        try {
          await server.close();
        } catch (e) {
          if (!(e instanceof StrictReplayError)) throw e;
          failure = 'strict mode: ' + (e.summary.unmatched.length ? `${e.summary.unmatched.length} unmatched request(s)` : `${e.summary.unused.length} unused fixture(s)`);
        }
        if (o.report) await writeReport(o.report, server.report());
        return failure;
      };
      if (exec) {
        // stdout belongs to the command: regtape's own lines go to stderr.
        const addr = clientAddress(server.host, server.port, server.url.startsWith('https:') ? 'https' : 'http');
        io.say(`regtape replaying ${server.exchanges} exchanges from ${server.files.length} fixture files on ${server.url}; running ${exec.join(' ')}`);
        const code = await runCommand(exec, { REGTAPE_URL: addr.url, REGTAPE_HOST: addr.host }, (line) => io.say(line, 'warn'));
        const failure = await shutdown();
        if (failure) io.say(`regtape: ${failure}${code === 0 ? '' : ` (the exit code, ${code}, is the command's)`}`, 'warn');
        process.exitCode = code !== 0 ? code : failure ? 1 : 0;
        return;
      }
      onSignals(async () => {
        const failure = await shutdown();
        if (failure) throw new UserError(failure);
      }, (line) => io.say(line, 'warn'));
      // Printed once the signal handlers are in place: a test harness may stop us right after it.
      if (fwd) out(`regtape forward proxy replaying ${fwd.exchanges} exchanges of ${fwd.hosts.join(', ')} on ${fwd.url} (clients: HTTPS_PROXY=${fwd.url}, trust ${fwd.caCertPath})`);
      else out(`regtape replaying ${server.exchanges} exchanges from ${server.files.length} fixture files on ${server.url}`);
    });
  prog
    .command('ca')
    .description("create regtape's certificate authority on first use (for --tls and the forward proxy) and print the path of its certificate")
    .option('--ca-dir <dir>', 'the CA folder (default $REGTAPE_CA_DIR or ~/.config/regtape/ca)')
    .addHelpText('after', '\nExample:\n  $ export SSL_CERT_FILE=$(regtape ca)   # Go clients (skopeo, podman, crane) then trust regtape --tls')
    .action(async (o: { caDir?: string }) => {
      const { hints, certPath } = await caCommand(o.caDir);
      for (const h of hints) err(h);
      out(certPath); // the last line, alone on stdout: $(regtape ca) is the path
    });

  prog
    .command('verify')
    .description('check fixtures: every body against its digest and size, every manifest against its digest, every pull complete offline')
    .argument('<paths...>', 'fixture folders or files')
    .option('--store <dir>', 'read bodies from DIR, the store they were recorded into with record --store')
    .option('--allow-empty', 'pass when the paths hold no fixtures (default: an error)')
    .addHelpText('after', '\nExample:\n  $ regtape verify fixtures/   # exit 1 and one line per problem (file:line: kind: what) if anything is wrong')
    .action(async (paths: string[], o: { store?: string; allowEmpty?: boolean }) => {
      const report = await verify(paths, { store: o.store });
      if (!o.allowEmpty) refuseEmpty('verify', paths, report.files);
      out(formatReport(report).trimEnd());
      if (report.problems.length) process.exitCode = 1;
    });

  prog
    .command('ls')
    .description('what a fixture folder holds, by repository and tag: manifests, blobs, sizes, exchanges')
    .argument('<paths...>', 'fixture folders or files')
    .option('--store <dir>', 'read bodies from DIR, the store they were recorded into with record --store')
    .addHelpText('after', '\nExample:\n  $ regtape ls examples/hello-pull')
    .action(async (paths: string[], o: { store?: string }) => {
      out(formatListing(await ls(paths, { store: o.store })).trimEnd());
    });
  return prog;
}

export async function main(argv: string[]): Promise<number> {
  try {
    const { argv: args, command } = splitExec(argv);
    await program(command).parseAsync(args);
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
