// `portcullis test <path>`: runs the *.test.yaml policy tests; one line per failed test, then
// `N passed, N failed`; exit 1 when any fails (or when there is no test to run).
import type { Command } from 'commander';
import { formatTestRun, runPolicyTests } from '../policy/policy-tests.js';

export function register(program: Command): void {
  program
    .command('test')
    .description('run the policy tests (*.test.yaml) beside a policy file or in a folder')
    .argument('<path>', 'policy folder, policy file or test file')
    .action((path: string) => {
      const run = runPolicyTests(path);
      process.stdout.write(formatTestRun(run));
      if (!run.results.length) process.stderr.write(`portcullis: no *.test.yaml tests found for ${path}\n`);
      process.exitCode = run.failed > 0 || run.results.length === 0 ? 1 : 0;
    });
}
