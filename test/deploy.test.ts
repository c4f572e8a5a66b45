// The deployment files, checked as far as this machine allows (no container runtime, no cluster):
// the Dockerfile's stages and the layout they make, its HEALTHCHECK run against a real gateway;
// the systemd unit through systemd-analyze when it is installed; the Kubernetes manifests laid
// out as a pod sees them (ConfigMap and Secret files under /etc/portcullis), the config loaded
// with the gateway's own loader and the policy compiled, and every name and port cross-checked.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, posix } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseAllDocuments, parse as parseYamlText } from 'yaml';
import { generateApiKey, hashApiKey } from '../src/auth/api-keys.js';
import { SERVE_NODE_FLAGS } from '../src/cli/heap.js';
import { parseConfig } from '../src/config/load.js';
import { configSchema } from '../src/config/schema.js';
import { loadBundle } from '../src/policy/compile.js';
import { ROOT, startConfiguredGateway, tempDir, upstreams } from './e2e/harness.js';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string>; engines: { node: string } };
const scratch = tempDir('pcl-deploy-');
after(() => scratch.remove());

/** Dockerfile instructions, continuation lines joined, comments dropped, grouped by stage. */
function dockerStages(): { from: string; name?: string; steps: { op: string; args: string }[] }[] {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const stages: { from: string; name?: string; steps: { op: string; args: string }[] }[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    if (!m || line.trim().startsWith('#')) continue;
    const [, op, args] = m;
    if (op === 'FROM') {
      const [, from, name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args.trim())!;
      stages.push({ from, name, steps: [] });
    } else stages.at(-1)!.steps.push({ op, args: args.trim() });
  }
  return stages;
}
const exec = (args: string): string[] => JSON.parse(args) as string[];

describe('Dockerfile', () => {
  const stages = dockerStages();
  const final = stages.at(-1)!;
  const last = (op: string) => final.steps.filter((s) => s.op === op).at(-1);

  test('multi-stage: the package is packed, installed without dev dependencies, and only that is copied into the runtime', () => {
    assert.ok(stages.length >= 2);
    // The newest Node the package supports (Node 20 is past its end of life).
    const major = Math.max(...[...pkg.engines.node.matchAll(/\^(\d+)/g)].map((m) => Number(m[1])));
    for (const s of stages) assert.match(s.from, new RegExp(`^node:${major}[-.]`), 'every stage is on the newest Node the package supports');
    const runs = stages.flatMap((s) => s.steps.filter((x) => x.op === 'RUN').map((x) => x.args)).join('\n');
    assert.match(runs, /npm ci\b[^\n]*&& npm pack/, 'the package stage builds (prepare) and packs');
    assert.match(runs, /npm install --omit=dev\b[^\n]*portcullis-\*\.tgz/, 'the install stage installs the tarball, production dependencies only');
    // The runtime stage takes files only from the install stage: no sources, no build context.
    assert.deepEqual(final.steps.filter((s) => s.op === 'COPY' || s.op === 'ADD').map((s) => s.args.split(/\s+/)[0]), ['--from=install']);
    assert.ok(!final.steps.some((s) => s.op === 'RUN' && /npm|apt-get/.test(s.args)), 'no toolchain or npm run in the runtime stage');
    const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const p of ['node_modules', 'dist', 'data']) assert.ok(ignore.includes(p), `.dockerignore has ${p}`);
  });

  test('runs the installed bin as a non-root user', () => {
    const user = last('USER')?.args;
    assert.ok(user && !/^(root|0)(:|$)/.test(user), `USER ${user}`);
    assert.ok(final.steps.findIndex((s) => s.op === 'USER') < final.steps.findIndex((s) => s.op === 'ENTRYPOINT'));
    const entry = exec(last('ENTRYPOINT')!.args);
    const install = stages.find((s) => s.name === 'install')!;
    const workdir = install.steps.find((s) => s.op === 'WORKDIR')!.args;
    // npm install <tarball> in WORKDIR puts the package at node_modules/portcullis, its bin where package.json says.
    assert.deepEqual(entry, ['node', ...SERVE_NODE_FLAGS, posix.join(workdir, 'node_modules/portcullis', pkg.bin.portcullis)]);
    assert.deepEqual(exec(last('CMD')!.args).slice(0, 3), ['serve', '-c', '/etc/portcullis/portcullis.yaml']);
  });

  test('its HEALTHCHECK passes against a running gateway on /healthz and fails when nothing listens', async () => {
    const check = last('HEALTHCHECK')!.args;
    const cmd = exec(check.slice(check.indexOf('CMD') + 3).trim());
    assert.match(cmd.join(' '), /http:\/\/127\.0\.0\.1:8080\/healthz/);
    const gw = await startConfiguredGateway({ servers: { everything: upstreams.everything() }, auth: { anonymous: true } });
    try {
      const port = new URL(gw.base).port;
      // Asynchronously: the gateway runs in this process and must answer meanwhile.
      const run = (p: string) =>
        new Promise<number | null>((resolve) => spawn(process.execPath, cmd.slice(1).map((a) => a.replace(':8080/', `:${p}/`)), { stdio: 'ignore', timeout: 10_000 }).on('exit', resolve));
      assert.equal(cmd[0], 'node');
      assert.equal(await run(port), 0);
      await gw.close();
      assert.equal(await run(port), 1);
    } finally {
      await gw.close().catch(() => undefined);
    }
  });
});

describe('systemd unit', () => {
  const file = join(ROOT, 'deploy/systemd/portcullis.service');
  const text = readFileSync(file, 'utf8');
  const value = (key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(text)?.[1];

  test('runs the installed bin as its own user, restarts on failure, stops with SIGTERM', () => {
    const flags = SERVE_NODE_FLAGS.length;
    assert.deepEqual(value('ExecStart')?.split(' ').slice(0, 5 + flags), ['/usr/bin/node', ...SERVE_NODE_FLAGS, `/opt/portcullis/node_modules/portcullis/${pkg.bin.portcullis}`, 'serve', '-c', '/etc/portcullis/portcullis.yaml']);
    assert.equal(value('User'), 'portcullis');
    assert.equal(value('Restart'), 'on-failure');
    assert.equal(value('KillSignal'), 'SIGTERM');
    assert.equal(value('ReadWritePaths'), '/var/lib/portcullis');
    assert.equal(value('WantedBy'), 'multi-user.target');
  });

  test('systemd-analyze verify finds nothing to say (when systemd is installed)', (t) => {
    if (!existsSync('/usr/bin/systemd-analyze')) return t.skip('systemd-analyze is not installed');
    const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '');
    assert.equal(r.status, 0);
  });
});

describe('Kubernetes manifests', () => {
  const dir = join(ROOT, 'deploy/kubernetes');
  const kustomization = parseYamlText(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as { resources: string[] };
  const load = (f: string) => parseAllDocuments(readFileSync(join(dir, f), 'utf8')).map((d) => d.toJS() as any);
  const resources = kustomization.resources.flatMap(load);
  const secrets = load('secret.yaml');
  const all = [...resources, ...secrets];
  const find = (kind: string, name: string) => all.find((r) => r.kind === kind && r.metadata.name === name);
  const deployment = resources.find((r) => r.kind === 'Deployment');
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  const configMap = find('ConfigMap', 'portcullis-config');

  test('every resource has its apiVersion, kind and name; the Deployment runs several replicas', () => {
    const apis: Record<string, string> = { Deployment: 'apps/v1', Service: 'v1', ConfigMap: 'v1', Secret: 'v1' };
    for (const r of all) {
      assert.equal(r.apiVersion, apis[r.kind], `${r.kind} ${r.metadata?.name}`);
      assert.match(r.metadata.name, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    }
    assert.ok(deployment.spec.replicas >= 2);
    assert.deepEqual(deployment.spec.selector.matchLabels, deployment.spec.template.metadata.labels);
    assert.equal(pod.securityContext.runAsNonRoot, true);
  });

  test('Services select the pods and reach named container ports; the probes are /readyz and /healthz', () => {
    const ports = new Map<string, number>(container.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
    for (const svc of resources.filter((r) => r.kind === 'Service')) {
      for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(deployment.spec.template.metadata.labels[k], v);
      for (const p of svc.spec.ports) assert.ok(ports.has(p.targetPort), `${svc.metadata.name} → ${p.targetPort}`);
    }
    assert.deepEqual(container.readinessProbe.httpGet, { path: '/readyz', port: 'mcp' });
    assert.deepEqual(container.livenessProbe.httpGet, { path: '/healthz', port: 'mcp' });
  });

  test('laid out as the pod sees them, the ConfigMap and Secrets make a config the gateway loads, on PostgreSQL, with its policy', () => {
    // /etc/portcullis as mounted: each volumeMount filled from its ConfigMap or Secret.
    const root = join(scratch.path, 'pod');
    const volumes = new Map<string, any>(pod.volumes.map((v: { name: string }) => [v.name, v]));
    const keyValue: Record<string, string> = {};
    for (const m of container.volumeMounts) {
      const v = volumes.get(m.name);
      assert.ok(v, `volume ${m.name}`);
      if (v.emptyDir) continue;
      const source = v.configMap ? find('ConfigMap', v.configMap.name) : find('Secret', v.secret.secretName);
      assert.ok(source, `the ${m.name} volume's source exists`);
      const data: Record<string, string> = { ...source.data, ...source.stringData };
      const items: { key: string; path: string }[] = v.configMap?.items ?? Object.keys(data).map((k) => ({ key: k, path: k }));
      for (const item of items) {
        assert.ok(item.key in data, `${source.metadata.name} has ${item.key}`);
        const target = m.subPath ? (m.subPath === item.path ? m.mountPath : undefined) : posix.join(m.mountPath, item.path);
        if (!target) continue;
        let content = data[item.key];
        // The Secret holds placeholders: put in what an operator would (a real hash, a real key).
        if (item.key.endsWith('.sha256')) content = hashApiKey(generateApiKey());
        if (item.key.endsWith('.pem')) content = generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
        keyValue[target] = content;
        mkdirSync(dirname(join(root, target)), { recursive: true });
        writeFileSync(join(root, target), content);
      }
    }
    const configPath = '/etc/portcullis/portcullis.yaml';
    assert.ok(keyValue[configPath], 'the config is mounted where the container args say');
    assert.deepEqual(container.args.slice(0, 3), ['serve', '-c', configPath]);

    // ${env:…} from the Secret given to envFrom; absolute paths under the laid-out root.
    const env = find('Secret', container.envFrom[0].secretRef.name).stringData as Record<string, string>;
    let text = keyValue[configPath].replaceAll('/etc/portcullis/', `${root}/etc/portcullis/`);
    const adminListen = configSchema.safeParse({ servers: { x: { transport: 'stdio', command: 'x' } }, admin: { listen: { host: '0.0.0.0', port: 8081 } } }).success;
    const admin = parseYamlText(text).admin;
    assert.deepEqual(admin.listen, { host: '0.0.0.0', port: container.ports.find((p: { name: string }) => p.name === 'admin').containerPort });
    // Until the admin listener is in the schema (the admin API branch), its section is checked above only.
    if (!adminListen) text = text.replace(/^ {0}admin:\n(?: {2}.*\n)+/m, '');
    const loaded = parseConfig(text, join(root, configPath), env);
    assert.match(loaded.config.store.url, /^postgres:\/\//);
    assert.equal(loaded.config.listen.port, container.ports.find((p: { name: string }) => p.name === 'mcp').containerPort);
    assert.equal(loaded.config.listen.host, '0.0.0.0');
    assert.deepEqual(loaded.config.listen.allowedHosts, [], "kubelet's probes send the pod IP as Host");
    assert.ok(existsSync(loaded.config.audit.signingKey!), 'the signing key is mounted');
    const policy = loaded.config.policy as { path: string };
    const bundle = loadBundle(join(loaded.baseDir, policy.path));
    assert.ok(Object.keys(bundle.files).length >= 1, 'the policy folder holds the ConfigMap policy');
  });

  test('kubectl kustomize builds the set (when kubectl is installed)', (t) => {
    if (spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status !== 0) return t.skip('kubectl is not installed');
    const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(parseAllDocuments(r.stdout).map((d) => (d.toJS() as { kind: string }).kind).sort(), ['ConfigMap', 'Deployment', 'Service', 'Service']);
  });
});
