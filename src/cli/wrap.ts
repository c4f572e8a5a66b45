import type { Command } from 'commander';
import { ANONYMOUS, type Identity } from '../auth/identity.js';
import { loadConfig } from '../config/load.js';
import { PortcullisError } from '../errors.js';
import { gatewayFromConfig } from '../gateway/start.js';
import { serveStdio } from '../fronts/stdio.js';
import { createLogger } from '../observability/log.js';
import { stopOnSignals } from './signals.js';

export function register(program: Command): void {
  program
    .command('wrap')
    .description('stdio front: serve one MCP session on stdin/stdout, governed by policy, to a configured server')
    .option('-c, --config <file>', 'configuration file', 'portcullis.yaml')
    .requiredOption('--server <name>', 'the configured server to reach')
    .option('--identity <sub>', 'the identity this session acts as')
    .option('--groups <a,b>', 'that identity\'s groups (comma-separated)', '')
    .option('--token-env <NAME>', 'or: an environment variable holding a bearer token (OIDC JWT or API key), validated like on HTTP', 'PORTCULLIS_TOKEN')
    .action(async (opts: { config: string; server: string; identity?: string; groups: string; tokenEnv: string }) => {
      const loaded = loadConfig(opts.config);
      if (!Object.hasOwn(loaded.config.servers, opts.server)) {
        throw new PortcullisError('PCL_USAGE', `no server named "${opts.server}" in ${opts.config} (have: ${Object.keys(loaded.config.servers).join(', ')})`);
      }
      const log = createLogger(loaded.config.logging.level, true);
      const stop = stopOnSignals(log);
      const { gateway, wiring } = await gatewayFromConfig(loaded, log);
      try {
        const token = process.env[opts.tokenEnv];
        let identity: Identity;
        if (opts.identity) identity = { sub: opts.identity, groups: opts.groups.split(',').filter(Boolean), claims: {}, via: 'local' };
        else if (token) {
          await gateway.auth.start();
          const outcome = await gateway.auth.authenticate(`Bearer ${token}`, { server: opts.server });
          if (!outcome.ok) throw new PortcullisError('PCL_AUTH_FAILED', `the token in ${opts.tokenEnv} was refused: ${outcome.description}`);
          identity = outcome.identity;
        } else if (loaded.config.auth.anonymous) identity = ANONYMOUS;
        else throw new PortcullisError('PCL_USAGE', `say who this session acts as: --identity <sub> [--groups a,b], or a token in ${opts.tokenEnv} (or set auth.anonymous: true)`);
        // A signal drains the session's requests in flight, then ends it like closing stdin does.
        void stop.requested.then(() => gateway.close({ force: stop.force }));
        const reason = await serveStdio(gateway, opts.server, identity);
        log.info({ reason }, 'wrap session ended');
        await gateway.close({ force: stop.force });
      } finally {
        // The closing audit checkpoint, whatever ended the session (or kept it from opening).
        await wiring.close();
        stop.done();
      }
    });
}
