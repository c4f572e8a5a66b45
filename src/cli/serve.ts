import type { Command } from 'commander';
import { loadConfig } from '../config/load.js';
import { serveFromConfig } from '../gateway/start.js';

export function register(program: Command): void {
  program
    .command('serve')
    .description('run the gateway')
    .option('-c, --config <file>', 'configuration file', 'portcullis.yaml')
    .action(async (opts: { config: string }) => {
      const loaded = loadConfig(opts.config);
      const running = await serveFromConfig(loaded);
      const names = Object.keys(loaded.config.servers);
      process.stderr.write(`portcullis: listening; MCP endpoints:\n${names.map((n) => `  ${running.url(n)}`).join('\n')}\n`);
      if (running.admin) process.stderr.write(`portcullis: admin API at ${running.admin.base}/admin/v1\n`);
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) return;
          stopping = true;
          running.wiring.log.info({ signal }, 'shutting down: no new connections, finishing in-flight requests');
          running.close().then(resolve, resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
    });
}
