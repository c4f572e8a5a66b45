import { Option, type Command } from 'commander';
import { loadConfig } from '../config/load.js';
import { accessWarnings } from '../config/warnings.js';
import { serveFromConfig } from '../gateway/start.js';
import { createLogger, LOG_FORMATS, type LogFormat } from '../observability/log.js';
import { tuneHeap, withServeFlags } from './heap.js';
import { stopOnSignals } from './signals.js';

export function register(program: Command): void {
  program
    .command('serve')
    .description('run the gateway')
    .option('-c, --config <file>', 'configuration file', 'portcullis.yaml')
    .addOption(new Option('--log-format <format>', 'log lines as JSON, or pretty for people (default: pretty in a terminal, else JSON)').choices(LOG_FORMATS))
    .action(async (opts: { config: string; logFormat?: LogFormat }) => {
      withServeFlags(); // first: where it applies, this process is replaced
      tuneHeap(); // before the policy compiles: its garbage sets the first limits
      const loaded = loadConfig(opts.config);
      // Before anything starts: a signal during startup stops the gateway as soon as it runs.
      const log = createLogger(loaded.config.logging.level, false, opts.logFormat);
      const stop = stopOnSignals(log);
      try {
        const running = await serveFromConfig(loaded, log);
        for (const w of accessWarnings(loaded.config)) log.warn(w);
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
