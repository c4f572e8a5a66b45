import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import { serveFromConfig } from '../gateway/start.js';
import { createLogger } from '../observability/log.js';
import { stopOnSignals } from './signals.js';

export function register(program: Command): void {
  program
    .command('serve')
    .description('run the gateway')
    .option('-c, --config <file>', 'configuration file', 'portcullis.yaml')
    .action(async (opts: { config: string }) => {
      const loaded = loadConfig(opts.config);
      // Before anything starts: a signal during startup stops the gateway as soon as it runs.
      const log = createLogger(loaded.config.logging.level);
      const stop = stopOnSignals(log);
      try {
        const running = await serveFromConfig(loaded, log);
        const names = Object.keys(loaded.config.servers);
        process.stderr.write(`portcullis: listening; MCP endpoints:\n${names.map((n) => `  ${running.url(n)}`).join('\n')}\n`);
        if (running.admin) process.stderr.write(`portcullis: admin API at ${running.admin.base}/admin/v1\n`);
        await stop.requested;
        await running.close({ force: stop.force });
      } finally {
        stop.done();
      }
    });
}
