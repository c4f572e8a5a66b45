#!/usr/bin/env node
// The staging step of examples/ci/policy.yml. Starts the gateway binary production runs, with
// policy from its own store; pushes the bundle under review through the admin API, exactly as
// the deploy step will; sends each check as a real MCP tools/call; then asserts on the audit
// log that each call was decided as expected (effect, and rule when given).
//
//   node staging.mjs <policy dir> <staging config> <checks.json>
//
// $PORTCULLIS is the command to run (default "npx portcullis"). Exit 0 when every check holds.
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [policyDir, configFile, checksFile] = process.argv.slice(2);
if (!checksFile) {
  console.error('usage: staging.mjs <policy dir> <staging config> <checks.json>');
  process.exit(2);
}
const [command, ...prefix] = (process.env.PORTCULLIS ?? 'npx portcullis').split(' ');
const checks = JSON.parse(readFileSync(checksFile, 'utf8'));
const dir = mkdtempSync(join(tmpdir(), 'portcullis-staging-'));
const token = randomBytes(24).toString('base64url');
const env = { ...process.env, STAGING_DIR: dir, STAGING_ADMIN_SHA256: createHash('sha256').update(token).digest('hex'), PORTCULLIS_ADMIN_TOKEN: token };
const portcullis = (args) => spawnSync(command, [...prefix, ...args], { env, encoding: 'utf8' });

const gateway = spawn(command, [...prefix, 'serve', '-c', configFile], { env, stdio: ['ignore', 'ignore', 'pipe'] });
let failures = 0;
try {
  const { mcp, admin } = await addresses(gateway);
  const push = portcullis(['push', policyDir, '--url', admin, '-m', 'staging']);
  process.stderr.write(push.stdout + push.stderr);
  if (push.status !== 0) throw new Error('the bundle was refused (see above)');

  const sent = [];
  for (const [i, check] of checks.entries()) sent.push({ check, requestId: `staging-${i}`, sessionId: await callTool(mcp[check.server], check, `staging-${i}`) });

  const query = portcullis(['audit', 'query', '-c', configFile, '--type', 'decision']);
  if (query.status !== 0) throw new Error(`audit query failed: ${query.stderr}`);
  const decisions = query.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l).data);
  for (const { check, requestId, sessionId } of sent) {
    const d = decisions.find((x) => x.sessionId === sessionId && x.requestId === requestId);
    const problem = !d ? 'no decision in the audit log' : d.effect !== check.expect ? `decided ${d.effect} by ${d.rule}` : check.rule && d.rule !== check.rule ? `decided by ${d.rule}, not ${check.rule}` : undefined;
    if (problem) failures++;
    console.log(`${problem ? 'FAIL' : 'ok  '} ${check.name}${problem ? `: expected ${check.expect}${check.rule ? ` by ${check.rule}` : ''}, ${problem}` : ''}`);
  }
  console.log(`${checks.length - failures} passed, ${failures} failed`);
} catch (e) {
  console.error(`staging: ${e.message}`);
  failures = failures || 1;
} finally {
  gateway.kill('SIGTERM');
  await new Promise((r) => (gateway.exitCode === null ? gateway.once('exit', r) : r()));
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failures ? 1 : 0);

/** The MCP endpoints and the admin API, from what `serve` prints once it listens. */
function addresses(child) {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the gateway did not start within 30 s:\n${out}`)), 30_000);
    child.stderr.on('data', (d) => {
      out += d;
      const admin = /admin API at (http:\/\/\S+)\/admin\/v1/.exec(out);
      if (!admin) return;
      clearTimeout(timer);
      const mcp = Object.fromEntries([...out.matchAll(/(http:\/\/\S+\/mcp\/(\S+))/g)].map((m) => [decodeURIComponent(m[2]), m[1]]));
      resolve({ mcp, admin: admin[1] });
    });
    child.once('exit', (code) => reject(new Error(`the gateway exited (${code}):\n${out}`)));
  });
}

/** One MCP session: initialize, initialized, the tools/call, then DELETE. Returns the session id. */
async function callTool(url, check, id) {
  if (!url) throw new Error(`${check.name}: no server "${check.server}" in the staging config`);
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  const post = (body, extra = {}) => fetch(url, { method: 'POST', headers: { ...headers, ...extra }, body: JSON.stringify(body) });
  const init = await post({ jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'staging', version: '1' } } });
  if (!init.ok) throw new Error(`${check.name}: initialize answered ${init.status}`);
  await init.text();
  const session = { 'mcp-session-id': init.headers.get('mcp-session-id'), 'mcp-protocol-version': '2025-11-25' };
  await (await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, session)).text();
  await (await post({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: check.tool, arguments: check.args ?? {} } }, session)).text();
  await fetch(url, { method: 'DELETE', headers: session });
  return session['mcp-session-id'];
}
