import { Option, type Command } from 'commander';
import { loadConfig } from '../config/load.js';
import { accessWarnings } from '../config/warnings.js';
import { serveFromConfig } from '../gateway/start.js';
import { LOG_FORMATS, type LogFormat } from '../observability/log.js';

export function register(program: Command): void {
  program
    .command('serve')
    .description('run the gateway')
    .option('-c, --config <file>', 'configuration file', 'portcullis.yaml')
    .addOption(new Option('--log-format <format>', 'log lines as JSON, or pretty for people (default: pretty in a terminal, else JSON)').choices(LOG_FORMATS))
    .action(async (opts: { config: string; logFormat?: LogFormat }) => {
      const loaded = loadConfig(opts.config);
      const running = await serveFromConfig(loaded, { logFormat: opts.logFormat });
      for (const w of accessWarnings(loaded.config)) running.wiring.log.warn(w);
      const names = Object.keys(loaded.config.servers);
      process.stderr.write(`portcullis: listening; MCP endpoints:\n${names.map((n) => `  ${running.url(n)}`).join('\n')}\n`);
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
