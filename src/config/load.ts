// Loads portcullis.yaml: YAML with line numbers, ${env:NAME} and ${file:PATH} substitution,
// schema validation. Every problem names the file, the line and the field.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isScalar, LineCounter, parseDocument, visit, type Document, type YAMLError } from 'yaml';
import type { z } from 'zod';
import { PortcullisError, type Problem } from '../errors.js';
import { describeIssue, schemaKeysAt } from './issues.js';
import { configSchema, type Config } from './schema.js';

export interface LoadedConfig {
  config: Config;
  /** The file it came from; relative paths in the config are resolved against its folder. */
  file: string;
  baseDir: string;
}

const SUBSTITUTION = /\$\{(env|file):([^}]+)\}/g;

/** Finds the line of a value in a parsed YAML document, or of its nearest existing parent. */
export function lineOf(doc: Document, lines: LineCounter, path: readonly PropertyKey[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === 'object' && node.range) return lines.linePos(node.range[0]).line;
  }
  return undefined;
}

/** One problem per issue, in sentences (see issues.ts); `schema` lets a misspelt key name the nearest valid one. */
export function zodProblems(error: z.ZodError, file: string, doc: Document, lines: LineCounter, schema?: z.ZodType): Problem[] {
  const value = doc.toJS();
  return error.issues.map((issue) => {
    const message = describeIssue(issue, value, (path) => (schema ? schemaKeysAt(schema, path) : []));
    const path = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]] : issue.path;
    return { file, line: lineOf(doc, lines, path), field: issue.path.map(String).join('.') || '(root)', message };
  });
}

/** A YAML syntax error's line, column and message (without the position the parser appends). */
export function yamlErrorAt(e: YAMLError, lines: LineCounter): { line: number; column: number; message: string } {
  const { line, col } = lines.linePos(e.pos[0]);
  return { line, column: col, message: e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '') };
}

/** Parses YAML text into a document, reporting syntax errors with their lines. */
export function parseYaml(text: string, file: string): { doc: Document; lines: LineCounter } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const problems = doc.errors.map((e) => ({ file, ...yamlErrorAt(e, lines) }));
  if (problems.length) throw new PortcullisError('PCL_CONFIG_INVALID', `${file} is not valid YAML`, problems);
  return { doc, lines };
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const { doc, lines } = parseYaml(text, file);
  const baseDir = dirname(resolve(file));
  const problems: Problem[] = [];
  visit(doc, {
    Scalar(_key, node, path) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      node.value = node.value.replace(SUBSTITUTION, (_m, kind: string, name: string) => {
        const line = node.range ? lines.linePos(node.range[0]).line : undefined;
        const field = path.filter((p) => p && typeof p === 'object' && 'key' in p).map((p) => String((p as { key: { value?: unknown } }).key?.value ?? '')).join('.');
        if (kind === 'env') {
          const v = env[name];
          if (v === undefined) problems.push({ file, line, field, message: `environment variable ${name} is not set` });
          return v ?? '';
        }
        try {
          return readFileSync(resolve(baseDir, name), 'utf8').trim();
        } catch (e) {
          problems.push({ file, line, field, message: `cannot read ${name}: ${(e as Error).message}` });
          return '';
        }
      });
      void isScalar;
    },
  });
  const result = configSchema.safeParse(doc.toJS());
  if (!result.success) problems.push(...zodProblems(result.error, file, doc, lines, configSchema));
  if (problems.length) throw new PortcullisError('PCL_CONFIG_INVALID', `${file} has ${problems.length} error${problems.length > 1 ? 's' : ''}`, problems);
  return { config: result.data!, file, baseDir };
}

export function loadConfig(file: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new PortcullisError('PCL_CONFIG_INVALID', `cannot read config ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseConfig(text, file);
}
