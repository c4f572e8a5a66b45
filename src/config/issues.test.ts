// What a user reads when portcullis.yaml is wrong: the line (and column for YAML syntax), the
// field, what was expected, and for a misspelt key the nearest valid one.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatProblem, PortcullisError } from '../errors.js';
import { parseConfig } from './load.js';

function problems(text: string): string[] {
  try {
    parseConfig(text, 'portcullis.yaml', {});
  } catch (e) {
    assert.ok(e instanceof PortcullisError, String(e));
    return e.problems.map(formatProblem);
  }
  assert.fail('the config was accepted');
}

const server = 'servers:\n  files:\n    transport: stdio\n    command: npx\n';

describe('config problems', () => {
  it('a YAML syntax error has its line and column', () => {
    assert.deepEqual(problems('listen:\n  host: 127.0.0.1\n port: 8080\n'), ['portcullis.yaml:3:1: All mapping items must start at the same column']);
    assert.deepEqual(problems(`${server}auth:\n  anonymous: true\n\tapiKeys: []\n`), ['portcullis.yaml:7:1: Tabs are not allowed as indentation']);
  });

  it('a misspelt key names the nearest valid one, in nested objects and in both kinds of server', () => {
    assert.deepEqual(problems(`${server.replace('command', 'comand')}`), [
      'portcullis.yaml:3: servers.files.command: is required (a string)',
      'portcullis.yaml:4: servers.files: unknown field "comand" (did you mean "command"?)',
    ]);
    assert.deepEqual(problems(`${server}limits: { maxBodyByte: 3 }\n`), ['portcullis.yaml:5: limits: unknown field "maxBodyByte" (did you mean "maxBodyBytes"?)']);
    assert.deepEqual(problems(`${server}lissen: { port: 1 }\n`), ['portcullis.yaml:5: (root): unknown field "lissen" (did you mean "listen"?)']);
    // Nothing near: no guess.
    assert.deepEqual(problems(`${server}colour: blue\n`), ['portcullis.yaml:5: (root): unknown field "colour"']);
  });

  it('a wrong type or value says what was expected and what was found', () => {
    assert.deepEqual(problems(`listen: { port: "8080" }\n${server}`), ['portcullis.yaml:1: listen.port: must be a number, not the string "8080"']);
    assert.deepEqual(problems(`${server}auth: { anonymous: yes-please }\n`), ['portcullis.yaml:5: auth.anonymous: must be true or false, not the string "yes-please"']);
    assert.deepEqual(problems(`${server}logging: { level: verbose }\n`), [
      'portcullis.yaml:5: logging.level: must be one of "fatal", "error", "warn", "info", "debug", "trace", "silent", not the string "verbose"',
    ]);
    assert.deepEqual(problems('servers: {}\n'), ['portcullis.yaml:1: servers: at least one server is required']);
  });
});
