// `portcullis lint [path] [--strict] [--format text|json|sarif] [-c portcullis.yaml]`: checks a
// policy bundle without running it. Errors exit 1; warnings exit 0, or 1 with --strict.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import { PortcullisError } from '../errors.js';
import { formatJson, formatSarif, formatText, lintPath } from '../policy/lint.js';

/** The policy path: the one given, else the config's policy.path (relative to the config's folder). */
export function policyPathFrom(path: string | undefined, configFile: string | undefined): { path: string; servers?: string[] } {
  if (!configFile) {
    if (!path) throw new PortcullisError('PCL_USAGE', 'give a policy path, or -c portcullis.yaml to use its policy.path');
    return { path };
  }
  const { config, baseDir } = loadConfig(configFile);
  const servers = Object.keys(config.servers);
  if (path) return { path, servers };
  if (!config.policy) throw new PortcullisError('PCL_USAGE', `${configFile} has no policy.path: give a policy path`);
  return { path: resolve(baseDir, config.policy.path), servers };
}

interface LintOpts {
  strict?: boolean;
  format: string;
  config?: string;
}

export function register(program: Command): void {
  program
    .command('lint')
    .description('check a policy file or folder: schema, CEL, shadowed rules, risky rules, unknown servers')
    .argument('[path]', 'policy file or folder (default: policy.path of the config given with -c)')
    .option('--strict', 'exit 1 on warnings too')
    .option('--format <format>', 'text, json or sarif', 'text')
    .option('-c, --config <file>', 'portcullis.yaml: its server names are checked, its policy.path is the default path')
    .action((path: string | undefined, o: LintOpts) => {
      if (!['text', 'json', 'sarif'].includes(o.format)) throw new PortcullisError('PCL_USAGE', `unknown format "${o.format}" (use text, json or sarif)`);
      const target = policyPathFrom(path, o.config);
      const findings = lintPath(target.path, { servers: target.servers });
      const out = o.format === 'json' ? formatJson(findings) : o.format === 'sarif' ? formatSarif(findings) : formatText(findings);
      process.stdout.write(out);
      const errors = findings.some((f) => f.level === 'error');
      process.exitCode = errors || (o.strict && findings.length) ? 1 : 0;
    });
}
