// `portcullis explain [-c portcullis.yaml | --policy <path>] --identity alice --groups analysts
// --server db --tool query --args '{…}'`: the decision, the rule, and why every rule of every
// covering policy did or did not match.
import type { Command } from 'commander';
import type { Identity } from '../auth/identity.js';
import { PortcullisError } from '../errors.js';
import { loadBundle } from '../policy/compile.js';
import type { DecisionInput } from '../policy/decision.js';
import { explain, formatExplanation } from '../policy/explain.js';
import { policyPathFrom } from './lint.js';

interface ExplainOpts {
  config?: string;
  policy?: string;
  identity: string;
  groups?: string;
  claims?: string;
  server: string;
  tool?: string;
  resource?: string;
  prompt?: string;
  method?: string;
  serverRequest?: string;
  args?: string;
  time?: string;
  json?: boolean;
}

function jsonObject(text: string, flag: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new PortcullisError('PCL_USAGE', `${flag} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new PortcullisError('PCL_USAGE', `${flag} must be a JSON object`);
  return v as Record<string, unknown>;
}

export function register(program: Command): void {
  program
    .command('explain')
    .description('show the decision for a request and why each rule did or did not match')
    .option('-c, --config <file>', 'portcullis.yaml (its policy.path is used)')
    .option('--policy <path>', 'policy file or folder')
    .requiredOption('--identity <sub>', "the caller's subject")
    .option('--groups <list>', "the caller's groups, comma-separated", '')
    .option('--claims <json>', "the caller's claims as a JSON object")
    .requiredOption('--server <name>', 'the server name')
    .option('--tool <name>', 'a tools/call of this tool')
    .option('--resource <uri>', 'a resources/read of this URI')
    .option('--prompt <name>', 'a prompts/get of this prompt')
    .option('--method <method>', 'the JSON-RPC method (default from --tool, --resource or --prompt)')
    .option('--server-request <method>', 'a request the server sends to the client (sampling/createMessage, elicitation/create, roots/list…)')
    .option('--args <json>', 'tool or prompt arguments as a JSON object')
    .option('--time <iso>', 'the request time (default now)')
    .option('--json', 'print the explanation as JSON')
    .action((o: ExplainOpts) => {
      if (o.config && o.policy) throw new PortcullisError('PCL_USAGE', 'give -c or --policy, not both');
      if (!o.config && !o.policy) throw new PortcullisError('PCL_USAGE', 'give -c portcullis.yaml or --policy <path>');
      const targets = [o.tool, o.resource, o.prompt, o.serverRequest].filter((x) => x !== undefined).length;
      if (targets > 1 || (o.serverRequest !== undefined && o.method !== undefined)) throw new PortcullisError('PCL_USAGE', 'give at most one of --tool, --resource, --prompt and --server-request (which is its own method)');
      const method = o.serverRequest ?? o.method ?? (o.tool !== undefined ? 'tools/call' : o.resource !== undefined ? 'resources/read' : o.prompt !== undefined ? 'prompts/get' : undefined);
      if (!method) throw new PortcullisError('PCL_USAGE', 'give --tool, --resource, --prompt, --method or --server-request');
      const time = o.time ? new Date(o.time) : new Date();
      if (Number.isNaN(time.getTime())) throw new PortcullisError('PCL_USAGE', `--time "${o.time}" is not a date`);
      const { path } = policyPathFrom(o.policy, o.config);
      const bundle = loadBundle(path);
      const identity: Identity = {
        sub: o.identity,
        groups: (o.groups ?? '').split(',').map((g) => g.trim()).filter(Boolean),
        claims: o.claims ? jsonObject(o.claims, '--claims') : {},
        via: 'local',
      };
      const input: DecisionInput = { identity, server: o.server, method, time };
      if (o.serverRequest !== undefined) input.from = 'server';
      if (o.tool !== undefined) input.tool = o.tool;
      if (o.resource !== undefined) input.resource = o.resource;
      if (o.prompt !== undefined) input.prompt = o.prompt;
      if (o.args !== undefined) input.args = jsonObject(o.args, '--args');
      else if (o.tool !== undefined || o.prompt !== undefined || o.serverRequest !== undefined) input.args = {};
      const e = explain(bundle, input);
      process.stdout.write(o.json ? JSON.stringify(e, null, 2) + '\n' : formatExplanation(e));
    });
}
