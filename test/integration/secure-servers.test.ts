import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cluster, type Redis } from 'ioredis';
import { AclOperationTypes, AclPermissionTypes, AclResourceTypes, ResourcePatternTypes } from 'kafkajs';
import type mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../scripts/local-stack/local-stack.js';
import { LocalRedisCluster } from '../../scripts/local-stack/redis-cluster.js';
import { SecureStack } from '../../scripts/local-stack/secure-stack.js';
import { uniqueName } from '../support/names.js';
import { eventually, finish, freePort, stopChild } from '../support/pipeline.js';
import { TEST_BASE_PORT, testStack } from '../support/test-env.js';

/**
 * cachesync where production runs: MariaDB that requires TLS (the CDC user also a client
 * certificate), Redis with only a TLS port and an ACL user limited to cachesync's commands and
 * keys, Kafka with only a SASL_SSL listener, a SCRAM-SHA-512 user and an authorizer that allows
 * that user just the ACLs the README lists.
 */
describe('over TLS, SASL and a Redis ACL user', () => {
  const name = uniqueName('sec');
  const p = `${name}:`;
  let stack: SecureStack;
  let sql: mysql.Connection;
  let redis: Redis;
  let configFile: string;
  let secrets: string[];
  const children: ChildProcess[] = [];

  /** `cachesync <args> -c <config>`, as a real process. */
  function cachesync(args: string[], env: NodeJS.ProcessEnv = {}, config = configFile): ChildProcess {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli.ts'), ...args, '-c', config],
      { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(child);
    return child;
  }

  /** `cachesync run` as a real process, ready (streaming); collects what it logs. */
  async function runReady(
    config = configFile,
  ): Promise<{ child: ChildProcess; port: number; logs: () => string }> {
    const port = await freePort();
    const child = cachesync(['run'], { METRICS_PORT: String(port) }, config);
    let logs = '';
    child.stdout?.on('data', (d: Buffer) => (logs += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (logs += d.toString()));
    await eventually(
      () =>
        fetch(`http://127.0.0.1:${port}/readyz`).then(
          (r) => r.ok,
          () => false,
        ),
      (ok) => ok || child.exitCode !== null,
      90_000,
    );
    expect(child.exitCode, logs).toBeNull();
    return { child, port, logs: () => logs };
  }

  function expectNoSecret(text: string): void {
    for (const secret of secrets) expect(text).not.toContain(secret);
  }

  beforeAll(async () => {
    stack = new SecureStack({
      dir: join(testStack().dir, 'secure'),
      basePort: TEST_BASE_PORT + 20,
      keyPatterns: [`${p}*`],
    });
    await stack.up();
    const { users, certs } = stack;
    secrets = [users.mysql.password, users.redis.password, users.kafka.password];

    sql = await stack.mysqlAdmin();
    await sql.query(
      `CREATE DATABASE ${name}; CREATE TABLE ${name}.users (id BIGINT PRIMARY KEY, email VARCHAR(100), name VARCHAR(100))`,
    );
    redis = stack.redisAdmin();

    // Exactly the Kafka ACLs the README lists, for the topics and group of this config.
    const admin = stack.kafkaAdmin().admin();
    await admin.connect();
    const allow = (
      resourceType: AclResourceTypes,
      resourceName: string,
      resourcePatternType: ResourcePatternTypes,
      operations: AclOperationTypes[],
    ) =>
      operations.map((operation) => ({
        resourceType,
        resourceName,
        resourcePatternType,
        principal: `User:${users.kafka.user}`,
        host: '*',
        operation,
        permissionType: AclPermissionTypes.ALLOW,
      }));
    const { DESCRIBE, DESCRIBE_CONFIGS, READ, WRITE, CREATE, DELETE } = AclOperationTypes;
    await admin.createAcls({
      acl: [
        ...allow(AclResourceTypes.TOPIC, `${name}.`, ResourcePatternTypes.PREFIXED, [
          DESCRIBE,
          DESCRIBE_CONFIGS,
          READ,
          WRITE,
          CREATE,
        ]),
        ...allow(AclResourceTypes.GROUP, name, ResourcePatternTypes.LITERAL, [DESCRIBE, READ]),
        ...allow(AclResourceTypes.GROUP, 'cachesync-reader-', ResourcePatternTypes.PREFIXED, [
          DESCRIBE,
          READ,
          DELETE,
        ]),
      ],
    });
    await admin.disconnect();

    const dir = stack.dir;
    writeFileSync(join(dir, 'mysql-password'), `${users.mysql.password}\n`);
    writeFileSync(join(dir, 'kafka-password'), `${users.kafka.password}\n`);
    writeFileSync(join(dir, 'redis-password'), `${users.redis.password}\n`);
    configFile = join(dir, 'cachesync.yaml');
    writeFileSync(
      configFile,
      [
        'source:',
        '  host: 127.0.0.1',
        `  port: ${stack.ports.mariadb}`,
        `  user: ${users.mysql.user}`,
        '  passwordFile: mysql-password',
        `  serverId: ${1000 + Math.floor(Math.random() * 1_000_000)}`,
        '  tls:',
        `    caFile: ${certs.ca}`,
        `    certFile: ${certs.clientCert}`,
        `    keyFile: ${certs.clientKey}`,
        'kafka:',
        `  brokers: [127.0.0.1:${stack.ports.kafka}]`,
        `  topic: ${name}.changes`,
        `  dlqTopic: ${name}.dlq`,
        `  groupId: ${name}`,
        '  partitions: 2',
        '  tls:',
        `    caFile: ${certs.ca}`,
        '  sasl:',
        '    mechanism: scram-sha-512',
        `    username: ${users.kafka.user}`,
        '    passwordFile: kafka-password',
        'redis:',
        `  url: rediss://${users.redis.user}@127.0.0.1:${stack.ports.redis}/0`,
        '  passwordFile: redis-password',
        '  tls:',
        `    caFile: ${certs.ca}`,
        'metrics:',
        '  port: ${METRICS_PORT:-0}',
        '  host: 127.0.0.1',
        'log:',
        '  level: debug',
        'tailer:',
        '  linger: 1ms',
        'consumer:',
        '  maxAttempts: 2',
        '  retryInitial: 20ms',
        '  retryMax: 200ms',
        'mappings:',
        `  - table: ${name}.users`,
        '    keys:',
        `      - key: "${p}user:{id}"`,
        '        action: refresh',
        `      - key: "${p}email:{email}"`,
        '        action: invalidate',
        '        delayedRedelete: 100ms',
      ].join('\n'),
    );
  });

  afterAll(async () => {
    for (const child of children) await stopChild(child);
    redis?.disconnect();
    await sql?.end().catch(() => undefined);
    await stack?.down();
  });

  it('check connects to every server over TLS, verifies each certificate and shows no secret', async () => {
    const { code, out, err } = await finish(cachesync(['check']));
    const { mariadb, kafka, redis: redisPort } = stack.ports;
    expect(out).toMatch(
      new RegExp(
        `ok {3}MySQL at 127.0.0.1:${mariadb}: TLS on \\(TLSv1\\.[23]\\), server certificate verified`,
      ),
    );
    expect(out).toContain(`ok   Kafka at 127.0.0.1:${kafka}: TLS on, server certificate verified`);
    expect(out).toContain(`ok   Kafka at 127.0.0.1:${kafka}: SASL scram-sha-512 as cachesync`);
    expect(out).toContain(`ok   Redis at rediss://cachesync@127.0.0.1:${redisPort}/0 answers as cachesync`);
    expect(out).toContain(
      `ok   Redis at rediss://cachesync@127.0.0.1:${redisPort}/0: TLS on, server certificate verified`,
    );
    expect(out).toContain('ok   grant REPLICATION SLAVE');
    expect(out).toContain('all checks passed');
    expect(code).toBe(0);
    expectNoSecret(out + err);
  });

  it('check fails on a server certificate it cannot verify', async () => {
    // Without caFile the system CAs are used, and they do not know the test CA.
    const text = readFileSync(configFile, 'utf8').replace(
      /(redis:[\s\S]*?tls:\n)\s+caFile: .*\n/,
      '$1    rejectUnauthorized: true\n',
    );
    const other = configFile.replace(/\.yaml$/, '-system-ca.yaml');
    writeFileSync(other, text);
    const { code, out, err } = await finish(cachesync(['check'], {}, other));
    expect(out).toMatch(
      /FAIL Redis at rediss:\/\/cachesync@127\.0\.0\.1:\d+\/0 answers as cachesync\n\s+.*(self[- ]signed|unable to (get|verify))/,
    );
    expect(code).toBe(1);
    expectNoSecret(out + err);
  });

  it('streams changes to Redis, dead-letters a poison message, and status and dlq read it all back', async () => {
    const { child, port, logs } = await runReady();

    await sql.query(
      `INSERT INTO ${name}.users VALUES (1, 'a@x', 'Ann'), (2, 'b@x', 'Bob');
       UPDATE ${name}.users SET name = 'Anna' WHERE id = 1;
       DELETE FROM ${name}.users WHERE id = 2;`,
    );
    await eventually(
      async () => [await redis.get(`${p}user:1`), await redis.exists(`${p}user:2`)],
      ([one, two]) => one === JSON.stringify({ id: 1, email: 'a@x', name: 'Anna' }) && two === 0,
    );

    // A message that is no change event cannot be applied: it goes to the DLQ.
    const producer = stack.kafkaAdmin().producer();
    await producer.connect();
    await producer.send({ topic: `${name}.changes`, messages: [{ key: 'x', value: 'not a change event' }] });
    await producer.disconnect();

    // A table-level change scans and deletes the table's keys, as the ACL user.
    await sql.query(`TRUNCATE TABLE ${name}.users`);
    await eventually(
      () => redis.exists(`${p}user:1`),
      (n) => n === 0,
    );

    // The delayed deletes of the email keys ran, as the ACL user (the script's MGET and ZMSCORE).
    const metrics = await eventually(
      async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text(),
      (text) => Number(/^cachesync_redeletes_total (\d+)/m.exec(text)?.[1] ?? 0) > 0,
    );
    expect(metrics).toContain('cachesync_');
    expectNoSecret(metrics);

    const dlq = await eventually(
      async () => {
        const { code, out } = await finish(cachesync(['dlq', 'list', '--json']));
        return { code, total: code === 0 ? (JSON.parse(out) as { total: number }).total : -1 };
      },
      (r) => r.total === 1,
      60_000,
    );
    expect(dlq.code).toBe(0);

    const status = await finish(cachesync(['status', '--json']));
    expect(status.code, status.err).toBe(0);
    const report = JSON.parse(status.out) as { checkpoint: unknown; source: unknown; dlqDepth: number };
    expect(report.checkpoint).not.toBeNull();
    expect(report.source).not.toBeNull();
    expect(report.dlqDepth).toBe(1);
    expectNoSecret(status.out + status.err);

    expect(await stopChild(child, 'SIGTERM')).toBe(0);
    expect(logs()).toContain('"msg"');
    expectNoSecret(logs());
  });

  it('the Redis ACL user reaches only cachesync’s keys and commands', async () => {
    const { Redis: Client } = await import('ioredis');
    const user = new Client({
      host: '127.0.0.1',
      port: stack.ports.redis,
      username: stack.users.redis.user,
      password: stack.users.redis.password,
      tls: { ca: readFileSync(stack.certs.ca, 'utf8') },
      lazyConnect: true,
    });
    try {
      await user.connect();
      await expect(user.set('someone-else:1', 'x')).rejects.toThrow(/NOPERM/);
      await expect(user.flushall()).rejects.toThrow(/NOPERM/);
      expect(await user.set(`${p}probe`, 'x')).toBe('OK');
      await user.del(`${p}probe`);
    } finally {
      user.disconnect();
    }
  });

  it('streams to a Redis Cluster over TLS, as the ACL user, checking each node’s certificate', async () => {
    const base = TEST_BASE_PORT + 25;
    const { certs, users } = stack;
    // Outside the secure stack's dir, which its start wipes: a cluster left by a killed run is found
    // by its pid files and stopped.
    const cluster = new LocalRedisCluster(
      join(testStack().dir, 'secure-redis-cluster'),
      [base, base + 1, base + 2],
      {
        ca: certs.ca,
        cert: certs.serverCert,
        key: certs.serverKey,
        adminPassword: users.redisAdmin.password,
        users: [stack.redisAclUser()],
      },
    );
    let admin: Cluster | undefined;
    try {
      await cluster.start();
      admin = new Cluster([{ host: '127.0.0.1', port: base }], {
        redisOptions: { password: users.redisAdmin.password, tls: { ca: readFileSync(certs.ca, 'utf8') } },
      });
      const look = admin;
      // The same pipeline on its own topics, writing to the cluster.
      const text = readFileSync(configFile, 'utf8')
        .replaceAll(`${name}.changes`, `${name}.cluster.changes`)
        .replaceAll(`${name}.dlq`, `${name}.cluster.dlq`)
        .replace(
          /redis:\n( {2}.*\n)+/,
          [
            'redis:',
            `  url: rediss://${users.redis.user}@127.0.0.1:${base}/0`,
            '  cluster: true',
            '  passwordFile: redis-password',
            '  tls:',
            `    caFile: ${certs.ca}`,
            '',
          ].join('\n'),
        );
      const clusterConfig = configFile.replace(/\.yaml$/, '-cluster.yaml');
      writeFileSync(clusterConfig, text);

      const checked = await finish(cachesync(['check'], {}, clusterConfig));
      expect(checked.out).toContain(
        `ok   Redis at rediss://cachesync@127.0.0.1:${base}/0: TLS on, server certificate verified`,
      );
      expect(checked.code, checked.out).toBe(0);

      const { child, logs } = await runReady(clusterConfig);
      await sql.query(
        `INSERT INTO ${name}.users VALUES (10, 'c@x', 'Cy'), (11, 'd@x', 'Di'), (12, 'e@x', 'Ed')`,
      );
      await sql.query(`UPDATE ${name}.users SET name = 'Cyd' WHERE id = 10`);
      await eventually(
        async () => [await look.get(`${p}user:10`), await look.get(`${p}user:12`)],
        ([ten, twelve]) =>
          ten === JSON.stringify({ id: 10, email: 'c@x', name: 'Cyd' }) &&
          twelve === JSON.stringify({ id: 12, email: 'e@x', name: 'Ed' }),
      );
      expect(await stopChild(child, 'SIGTERM')).toBe(0);
      expectNoSecret(logs());
    } finally {
      admin?.disconnect();
      await cluster.stop();
    }
  });
});
