// The portcullis command line. Each command lives in its own file and registers itself here.
// Exit codes: 0 success, 1 a failed check, 2 bad usage; errors are one clear line on stderr.
import { Command, CommanderError } from 'commander';
import { packageVersion } from '../version.js';
import { formatProblem, PortcullisError } from '../errors.js';
import { register as keys } from './keys.js';
import { register as init } from './init.js';
import { register as serve } from './serve.js';
import { register as wrap } from './wrap.js';
import { register as audit } from './audit.js';
import { register as replay } from './replay.js';
import { register as lint } from './lint.js';
import { register as policyTest } from './test.js';
import { register as explain } from './explain.js';
import { register as push } from './push.js';
import { register as decide } from './decide.js';
import { register as sessions } from './sessions.js';
import { register as approvals } from './approvals.js';

const version = packageVersion();

const program = new Command('portcullis')
  .description('Policy-as-code gateway for the Model Context Protocol')
  .version(version, '-V, --version', 'print the version')
  .showHelpAfterError(false)
  .exitOverride();

// Commands: one import and one register call each.
keys(program);
init(program);
serve(program);
wrap(program);
audit(program);
replay(program);
lint(program);
policyTest(program);
explain(program);
push(program);
decide(program);
sessions(program);
approvals(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  process.exitCode = exitCodeFor(e);
}

function exitCodeFor(e: unknown): number {
  if (e instanceof CommanderError) {
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0) return 0;
    return 2; // commander has already printed its one-line message
  }
  if (e instanceof PortcullisError) {
    process.stderr.write(`portcullis: ${e.message}\n`);
    for (const p of e.problems) process.stderr.write(`  ${formatProblem(p)}\n`);
    return e.code === 'PCL_USAGE' ? 2 : 1;
  }
  process.stderr.write(`portcullis: ${(e as Error)?.message ?? String(e)}\n`);
  return 1;
}
