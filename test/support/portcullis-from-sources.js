// The command line run from the TypeScript sources through tsx, for tests in a clone: the same
// program as the installed bin/portcullis.js, without a build step. (test/e2e/pack.test.ts runs
// the built package as a user installs it.)
import { register } from 'tsx/esm/api';
register();
await import('../../src/cli/main.ts');
