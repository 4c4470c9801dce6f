import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG_PATH, loadConfig, resolveConfigPath } from '../../src/config/load.js';
import type { Environment } from '../../src/config/interpolate.js';
import { ConfigError } from '../../src/core/errors.js';

const FIXTURES = resolve(import.meta.dirname, '../fixtures/config');
const EXAMPLE = resolve(import.meta.dirname, '../../config/cachesync.yaml');

const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cachesync-config-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Writes `text` to a file in this test's directory and returns its path. */
async function write(text: string, name = 'cachesync.yaml'): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, text);
  return file;
}

interface Sections {
  source?: string;
  kafka?: string;
  redis?: string;
  extra?: string;
  mappings?: string;
}

/** A small valid config; each section can be replaced by raw YAML. */
function configText(sections: Sections = {}): string {
  return [
    sections.source ?? 'source:\n  host: db\n  user: cdc\n  password: pw\n  serverId: 7',
    sections.kafka ?? 'kafka:\n  brokers: [k1:9092]',
    sections.redis ?? 'redis:\n  url: redis://r:6379/0',
    sections.extra ?? '',
    sections.mappings ??
      'mappings:\n  - table: shop.users\n    keys:\n      - key: "user:{id}"\n        action: invalidate',
  ].join('\n');
}

/** A mappings section with one table and the given key entries (YAML list items at indent 6). */
function keys(...entries: string[]): string {
  return `mappings:\n  - table: shop.users\n    keys:\n${entries.join('\n')}`;
}

/** Loads `text` and returns the problem lines of the ConfigError it must throw. */
async function problems(text: string, env: Environment = {}): Promise<string[]> {
  const file = await write(text);
  const message = await failure(loadConfig(file, { env }));
  const [header, ...lines] = message.split('\n');
  expect(header).toMatch(new RegExp(`^${escapeRegExp(file)}: invalid config, ${lines.length} problems?:$`));
  return lines.map((line) => line.trim());
}

/** Problem lines without their `(line N)` suffix, for assertions about the text alone. */
async function problemTexts(text: string, env: Environment = {}): Promise<string[]> {
  return (await problems(text, env)).map((line) => line.replace(/ \(line \d+\)$/, ''));
}

async function failure(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ConfigError);
  return (err as ConfigError).message;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('loadConfig: valid files', () => {
  it('compiles the SPEC example: durations in ms, defaults filled, templates parsed', async () => {
    const specFile = join(FIXTURES, 'spec-example.yaml');
    const files: Record<string, string> = {
      '/etc/cachesync/tls/ca.pem': CA_PEM,
      '/etc/cachesync/secrets/kafka-password': 'k-secret\n',
      '/etc/cachesync/secrets/redis-password': 'r-secret\n',
    };
    const config = await loadConfig(specFile, {
      env: { MYSQL_PASSWORD: 's3cret' },
      readFile: async (path) => files[path] ?? (await readFile(path, 'utf8')),
    });

    expect(config.file).toBe(join(FIXTURES, 'spec-example.yaml'));
    expect(config.source).toEqual({
      host: '127.0.0.1',
      port: 3306,
      user: 'cachesync',
      password: 's3cret',
      serverId: 4201,
      start: { kind: 'end' },
      connectTimeoutMs: 10_000,
      tls: { ca: CA_PEM, rejectUnauthorized: true },
    });
    expect(config.kafka).toEqual({
      brokers: ['127.0.0.1:9092'],
      clientId: 'cachesync',
      topic: 'cachesync.changes',
      dlqTopic: 'cachesync.dlq',
      checkpointTopic: 'cachesync.changes.checkpoint',
      groupId: 'cachesync',
      partitions: 6,
      replicationFactor: -1,
      tls: { ca: CA_PEM, rejectUnauthorized: true },
      sasl: { mechanism: 'scram-sha-512', username: 'cachesync', password: 'k-secret' },
    });
    expect(config.redis).toEqual({
      url: 'rediss://cachesync@127.0.0.1:6380/0',
      cluster: false,
      username: 'cachesync',
      password: 'r-secret',
      tls: { ca: CA_PEM, rejectUnauthorized: true },
    });
    expect(config.metrics).toEqual({ port: 9464, host: '0.0.0.0' });
    expect(config.tailer).toEqual({
      maxBufferedEvents: 4_000,
      maxBufferedBytes: 64 * 1024 * 1024,
      batchSize: 1_000,
      maxBatchBytes: 512 * 1024,
      lingerMs: 0,
      compression: 'gzip',
    });
    expect(config.consumer).toEqual({
      maxAttempts: 5,
      retryInitialMs: 100,
      retryMaxMs: 10_000,
      partitionsConcurrently: 3,
      maxPendingRedeletes: 100_000,
      maxFetchBytes: 256 * 1024,
      sessionTimeoutMs: 6000,
      heartbeatIntervalMs: 1000,
    });
    expect(config.log).toEqual({ level: 'info' });

    const [users, orders] = config.mappings;
    expect(users).toMatchObject({ table: 'shop.users', db: 'shop', name: 'users' });
    expect(users?.onlyWhenChanged).toBeUndefined();
    expect(
      users?.keys.map((k) => [k.path, k.template.source, k.action, k.format, k.ttlMs, k.ttlJitter]),
    ).toEqual([
      ['mappings[0].keys[0]', 'user:{id}', 'refresh', 'json', 3_600_000, 0],
      ['mappings[0].keys[1]', 'user:email:{email}', 'invalidate', 'json', undefined, 0],
    ]);
    expect(users?.keys[0]?.columns).toEqual(['id', 'email', 'name', 'balance']);
    expect(users?.keys[1]?.columns).toBeUndefined();
    expect(users?.keys[1]?.template.columns).toEqual(['email']);

    expect(orders).toMatchObject({ table: 'shop.orders', db: 'shop', name: 'orders' });
    expect(orders?.onlyWhenChanged).toEqual(['status', 'total', 'user_id']);
    expect(orders?.keys[0]?.delayedRedeleteMs).toBe(500);
    expect(orders?.keys[0]?.template.render({ user_id: 42 })).toBe('user:42:orders');
  });

  it('loads the example config/cachesync.yaml with the demo stack defaults', async () => {
    const config = await loadConfig(EXAMPLE, { env: { MYSQL_PASSWORD: 'cachesync' } });

    expect(config.source).toMatchObject({
      host: '127.0.0.1',
      port: 24400,
      user: 'cachesync',
      password: 'cachesync',
    });
    expect(config.kafka.brokers).toEqual(['127.0.0.1:24402']);
    expect(config.redis.url).toBe('redis://127.0.0.1:24401/0');
    expect(config.metrics.port).toBe(9464);
    const keysByTable = config.mappings.map((m) => [
      m.table,
      m.keys.map((k) => `${k.action} ${k.format} ${k.template.source}`),
    ]);
    expect(keysByTable).toEqual([
      ['shop.users', ['refresh json user:{id}', 'invalidate json user:email:{email}']],
      ['shop.orders', ['refresh hash order:{id}', 'invalidate json user:{user_id}:orders']],
    ]);
    expect(config.mappings[0]?.keys[0]).toMatchObject({
      columns: ['id', 'email', 'name', 'balance'],
      ttlMs: 3_600_000,
      ttlJitter: 0.1,
    });
    expect(config.mappings[1]?.keys[1]?.delayedRedeleteMs).toBe(500);
    expect(config.mappings[1]?.onlyWhenChanged).toEqual(['status', 'total', 'user_id']);
  });

  it('ships no default password: the example config needs MYSQL_PASSWORD', async () => {
    const message = await failure(loadConfig(EXAMPLE, { env: {} }));
    expect(message).toContain('source.password: environment variable MYSQL_PASSWORD is not set');
  });

  it('lets the environment move the example config to other servers', async () => {
    const config = await loadConfig(EXAMPLE, {
      env: {
        MYSQL_HOST: 'mariadb',
        MYSQL_PORT: '3306',
        MYSQL_PASSWORD: 'pw',
        KAFKA_BROKERS: 'kafka-1:9092, kafka-2:9092',
        REDIS_URL: 'rediss://cache:6380/2',
        METRICS_PORT: '9500',
      },
    });
    expect(config.source).toMatchObject({ host: 'mariadb', port: 3306, password: 'pw' });
    expect(config.kafka.brokers).toEqual(['kafka-1:9092', 'kafka-2:9092']);
    expect(config.redis.url).toBe('rediss://cache:6380/2');
    expect(config.metrics.port).toBe(9500);
  });

  it('coerces values from the environment to each field type', async () => {
    const file = await write(
      configText({
        source: 'source:\n  host: db\n  user: cdc\n  password: pw\n  serverId: ${SERVER_ID}',
        kafka: 'kafka:\n  brokers: ${BROKERS}\n  partitions: ${PARTITIONS:-12}',
        extra: 'metrics:\n  port: ${METRICS_PORT:-9464}\ntailer:\n  linger: ${LINGER:-20ms}',
        mappings: keys(
          '      - key: "user:{id}"\n        action: refresh\n        ttl: ${TTL}\n        ttlJitter: ${JITTER}',
        ),
      }),
    );
    const config = await loadConfig(file, {
      env: { SERVER_ID: '99', BROKERS: 'a:1,b:2', TTL: '90s', JITTER: '0.25' },
    });
    expect(config.source.serverId).toBe(99);
    expect(config.kafka.brokers).toEqual(['a:1', 'b:2']);
    expect(config.kafka.partitions).toBe(12);
    expect(config.metrics.port).toBe(9464);
    expect(config.tailer.lingerMs).toBe(20);
    expect(config.mappings[0]?.keys[0]).toMatchObject({ ttlMs: 90_000, ttlJitter: 0.25 });
  });

  it('keeps a secret with YAML punctuation intact', async () => {
    const secret = `p#ss: word # not a comment "dq" 'sq' {x} [y] \${Z}`;
    const file = await write(
      configText({ source: 'source:\n  host: db\n  user: cdc\n  password: ${DB_PW}\n  serverId: 7' }),
    );
    const config = await loadConfig(file, { env: { DB_PW: secret } });
    expect(config.source.password).toBe(secret);
  });

  it('keeps a password that YAML would otherwise read as a number or a boolean', async () => {
    const file = await write(
      configText({ source: 'source:\n  host: db\n  user: cdc\n  password: 0123\n  serverId: 7' }),
    );
    expect((await loadConfig(file, { env: {} })).source.password).toBe('0123');
  });

  it("accepts an empty password written as ''", async () => {
    const file = await write(
      configText({ source: "source:\n  host: db\n  user: cdc\n  password: ''\n  serverId: 7" }),
    );
    expect((await loadConfig(file, { env: {} })).source.password).toBe('');
  });

  it('reads passwordFile relative to the config file, trimming one trailing newline', async () => {
    await writeFile(join(dir, 'db-password'), 'line one\n\n');
    await writeFile(join(dir, 'redis-password'), 'r3dis\r\n');
    const file = await write(
      configText({
        source: 'source:\n  host: db\n  user: cdc\n  passwordFile: db-password\n  serverId: 7',
        redis: `redis:\n  url: redis://r:6379/0\n  passwordFile: ${join(dir, 'redis-password')}`,
      }),
    );
    const config = await loadConfig(file, { env: {} });
    expect(config.source.password).toBe('line one\n');
    expect(config.redis).toEqual({ url: 'redis://r:6379/0', cluster: false, password: 'r3dis' });
  });

  it('reads the config and its secrets through an injected readFile', async () => {
    const files: Record<string, string> = {
      '/etc/cachesync/cachesync.yaml': configText({
        source: 'source:\n  host: db\n  user: cdc\n  passwordFile: secret\n  serverId: 7',
      }),
      '/etc/cachesync/secret': 'from-fake\n',
    };
    const readFile = (path: string): string => {
      const text = files[path];
      if (text === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
      return text;
    };
    const config = await loadConfig('/etc/cachesync/cachesync.yaml', { env: {}, readFile });
    expect(config.source.password).toBe('from-fake');
  });

  it('parses every form of source.start', async () => {
    const startOf = async (start: string) => {
      const source = `source:\n  host: db\n  user: cdc\n  password: pw\n  serverId: 7\n  start: ${JSON.stringify(start)}`;
      return (await loadConfig(await write(configText({ source })), { env: {} })).source.start;
    };
    expect(await startOf('beginning')).toEqual({ kind: 'beginning' });
    expect(await startOf('0-1-1234')).toEqual({ kind: 'gtid', gtidSet: '0-1-1234' });
    expect(await startOf('0-1-1234,1-2-5')).toEqual({ kind: 'gtid', gtidSet: '0-1-1234,1-2-5' });
    expect(await startOf('3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7')).toEqual({
      kind: 'gtid',
      gtidSet: '3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5:7',
    });
    expect(await startOf('binlog.000003:1234')).toEqual({
      kind: 'file',
      filename: 'binlog.000003',
      position: 1234,
    });
  });
});

describe('loadConfig: problems', () => {
  it('names an unknown key with its path, the valid keys, and the likely typo', async () => {
    const lines = await problems(configText({ kafka: 'kafka:\n  brokers: [k:9092]\n  brokerz: [k:9092]' }));
    expect(lines).toEqual([
      'kafka.brokerz: unknown key (did you mean brokers?); valid keys here: brokers, clientId, topic, dlqTopic, ' +
        'checkpointTopic, groupId, partitions, replicationFactor, tls, sasl (line 8)',
    ]);
  });

  it('suggests nothing for an unknown key that resembles no valid one, and checks every level', async () => {
    const lines = await problemTexts(
      configText({
        extra: 'colour: blue',
        mappings: keys('      - key: "user:{id}"\n        action: invalidate\n        delayed_redelete: 1s'),
      }),
    );
    expect(lines).toEqual([
      'colour: unknown key; valid keys here: source, kafka, redis, metrics, tailer, consumer, audit, snapshot, log, mappings',
      'mappings[0].keys[0].delayed_redelete: unknown key (did you mean delayedRedelete?); valid keys here: key, ' +
        'action, columns, format, ttl, ttlJitter, delayedRedelete',
    ]);
  });

  it('rejects a duration without a unit and says which forms are valid', async () => {
    const lines = await problemTexts(
      configText({ mappings: keys('      - key: "user:{id}"\n        action: refresh\n        ttl: 60') }),
    );
    expect(lines).toEqual([
      'mappings[0].keys[0].ttl: got "60": a duration needs a unit; expected a number with a unit ms, s, m or h, ' +
        'like 500ms, 2s, 1.5m or 1h (only 0 may go without)',
    ]);
  });

  it('rejects a zero ttl and a jitter of 1 or more', async () => {
    const lines = await problemTexts(
      configText({
        mappings: keys(
          '      - key: "user:{id}"\n        action: refresh\n        ttl: 0\n        ttlJitter: 1',
        ),
      }),
    );
    expect(lines).toEqual([
      'mappings[0].keys[0].ttl: got "0"; expected a duration above 0, like 500ms or 1h',
      'mappings[0].keys[0].ttlJitter: got "1"; expected a number from 0 up to but not including 1, like 0.1',
    ]);
  });

  it('rejects an unknown action and lists the valid ones', async () => {
    const lines = await problems(
      configText({
        mappings:
          'mappings:\n  - table: shop.users\n    keys:\n      - key: "a:{id}"\n        action: invalidate\n' +
          '  - table: shop.orders\n    keys:\n      - key: "o:{id}"\n        action: refersh',
      }),
    );
    expect(lines).toEqual([
      'mappings[1].keys[0].action: got "refersh"; expected one of invalidate, refresh (line 19)',
    ]);
  });

  it('rejects refresh-only fields on an invalidate key, and allows delayedRedelete on both', async () => {
    const lines = await problemTexts(
      configText({
        mappings: keys(
          '      - key: "user:{id}"\n        action: invalidate\n        columns: [id]\n        format: hash' +
            '\n        ttl: 1h\n        ttlJitter: 0.1\n        delayedRedelete: 1s',
          '      - key: "u:{id}"\n        action: refresh\n        delayedRedelete: 1s',
        ),
      }),
    );
    const fix = 'only valid with action: refresh; remove it, or use action: refresh';
    expect(lines).toEqual(
      ['columns', 'format', 'ttl', 'ttlJitter'].map((field) => `mappings[0].keys[0].${field}: ${fix}`),
    );
  });

  it('rejects ttlJitter without a ttl', async () => {
    const lines = await problemTexts(
      configText({
        mappings: keys('      - key: "user:{id}"\n        action: refresh\n        ttlJitter: 0.1'),
      }),
    );
    expect(lines).toEqual([
      'mappings[0].keys[0].ttlJitter: spreads a ttl, but there is no ttl; add ttl or remove ttlJitter',
    ]);
  });

  it('reports a bad key template at its key path, with the parser’s explanation', async () => {
    const lines = await problemTexts(
      configText({
        mappings: keys(
          '      - key: "user:{id"\n        action: invalidate',
          '      - key: "users:all"\n        action: invalidate',
          '      - key: "{id}:user"\n        action: invalidate',
        ),
      }),
    );
    expect(lines).toEqual([
      'mappings[0].keys[0].key: got "user:{id": "{" at offset 5 is never closed; write "{{" for a literal brace',
      'mappings[0].keys[1].key: got "users:all": a key template needs at least one {column} placeholder, or ' +
        'every row maps to one key',
      'mappings[0].keys[2].key: got "{id}:user": a key template must start with literal text, like ' +
        '"user:{id}", so that a truncate of the table finds its keys without touching others; put a fixed prefix first',
    ]);
  });

  it('reports missing required fields', async () => {
    const lines = await problemTexts('source:\n  port: 3306\nkafka:\n  topic: t\nredis: {}\nmappings: []');
    expect(lines).toEqual([
      'source.host: missing; expected a host name or IP address',
      'source.user: missing; expected a MySQL user name',
      'source.serverId: missing; expected an integer from 1 to 4294967295',
      "source.password: missing; expected password (write '' for an empty one) or passwordFile",
      'kafka.brokers: missing; expected a list of brokers as host:port',
      'redis.url: missing; expected a redis:// or rediss:// URL',
      'mappings: got an empty list; expected at least one mapping',
    ]);
  });

  it('reports missing sections and an empty file', async () => {
    expect(await problemTexts('source:\n  host: db\n  user: u\n  password: p\n  serverId: 1\n')).toEqual([
      'kafka: missing; expected a mapping with keys brokers, clientId, topic, dlqTopic, checkpointTopic, groupId, ' +
        'partitions, replicationFactor, tls, sasl',
      'redis: missing; expected a mapping with keys url, cluster, username, password, passwordFile, tls',
      'mappings: missing; expected a list of mappings like - table: shop.users',
    ]);
    expect(await problemTexts('# nothing yet\n')).toEqual([
      '(top level): empty value; expected a mapping with keys source, kafka, redis, metrics, tailer, consumer, ' +
        'audit, snapshot, log, mappings',
    ]);
  });

  it('treats `password:` with no value as a mistake rather than an empty password', async () => {
    const lines = await problemTexts(
      configText({ source: 'source:\n  host: db\n  user: cdc\n  password:\n  serverId: 7' }),
    );
    expect(lines).toEqual(["source.password: empty value; expected a string (write '' for an empty one)"]);
  });

  it('rejects a secret given both inline and as a file', async () => {
    await writeFile(join(dir, 'pw'), 'x');
    const lines = await problemTexts(
      configText({
        source: 'source:\n  host: db\n  user: cdc\n  password: a\n  passwordFile: pw\n  serverId: 7',
      }),
    );
    expect(lines).toEqual([
      'source.passwordFile: given together with password; expected only one of password or passwordFile',
    ]);
  });

  it('names the config path and the file when a passwordFile is missing', async () => {
    const lines = await problemTexts(
      configText({ source: 'source:\n  host: db\n  user: cdc\n  passwordFile: nowhere/pw\n  serverId: 7' }),
    );
    expect(lines).toEqual([
      `source.passwordFile: cannot read ${JSON.stringify(join(dir, 'nowhere/pw'))}: no such file; ` +
        'expected a readable file holding the secret',
    ]);
  });

  it('reports each missing environment variable once, at its path', async () => {
    const lines = await problems(
      configText({
        source: 'source:\n  host: db\n  user: cdc\n  passwordFile: ${PW_FILE}\n  serverId: 7',
        kafka: 'kafka:\n  brokers: ${BROKERS:-k:9092}',
        extra: 'metrics:\n  port: ${METRICS_PORT}',
      }),
    );
    expect(lines).toEqual([
      'source.passwordFile: environment variable PW_FILE is not set; set it, or give a default as in ' +
        '${PW_FILE:-value} (line 4)',
      'metrics.port: environment variable METRICS_PORT is not set; set it, or give a default as in ' +
        '${METRICS_PORT:-value} (line 11)',
    ]);
  });

  it('rejects a value from the environment that does not fit the field', async () => {
    const lines = await problemTexts(configText({ extra: 'metrics:\n  port: ${METRICS_PORT}' }), {
      METRICS_PORT: '94x',
    });
    expect(lines).toEqual(['metrics.port: got "94x"; expected an integer from 0 to 65535']);
  });

  it('checks tables, column names, brokers, urls and topics', async () => {
    const lines = await problemTexts(
      configText({
        kafka: 'kafka:\n  brokers: [k1:9092, k2]\n  dlqTopic: cachesync.changes',
        redis: 'redis:\n  url: http://user:hunter2@r:6379',
        mappings:
          'mappings:\n  - table: users\n    keys:\n      - key: "u:{id}"\n        action: refresh\n' +
          '        columns: [id, "e mail"]\n    onlyWhenChanged: [status]\n' +
          '  - table: shop.orders\n    keys: []\n  - table: shop.orders\n    keys:\n      - key: "o:{id}"\n' +
          '        action: invalidate\n    onlyWhenChanged: []',
      }),
    );
    expect(lines).toEqual([
      'kafka.brokers[1]: got "k2"; expected host:port, like 127.0.0.1:9092',
      'kafka.dlqTopic: "cachesync.changes" is also topic; expected a topic of its own',
      'redis.url: scheme "http:" is not redis: or rediss:; expected redis://[user:password@]host[:port][/db] or ' +
        'rediss://...',
      'mappings[0].table: got "users"; expected db.table, like shop.users',
      'mappings[0].keys[0].columns[1]: got "e mail"; expected a column name of letters, digits, _ and $',
      'mappings[1].keys: got an empty list; expected at least one key',
      'mappings[2].table: shop.orders is already mapped at mappings[1]; expected each table once, with all its ' +
        'keys in that mapping',
      'mappings[2].onlyWhenChanged: got an empty list; expected at least one column',
    ]);
    expect(lines.join('\n')).not.toContain('hunter2');
  });

  it('checks number ranges, positions and cross-field bounds', async () => {
    const lines = await problemTexts(
      configText({
        source: 'source:\n  host: db\n  user: cdc\n  password: pw\n  serverId: -1\n  start: binlog.000001:2',
        extra:
          'consumer:\n  retryInitial: 20s\n  sessionTimeout: 3s\n  heartbeatInterval: 2s\nlog:\n  level: verbose',
      }),
    );
    expect(lines).toEqual([
      'source.serverId: got "-1"; expected an integer from 1 to 4294967295',
      'source.start: got "binlog.000001:2": a binlog file\'s first event is at 4; expected file:position >= 4',
      'consumer.retryMax: 10s is below retryInitial 20s; expected at least retryInitial',
      'consumer.heartbeatInterval: 2s is above a third of sessionTimeout 3s; expected at most 1s',
      'log.level: got "verbose"; expected one of trace, debug, info, warn, error, fatal, silent',
    ]);
  });

  it('reports several problems at once, in file order, each with its line number', async () => {
    const text = [
      'source:',
      '  host: db',
      '  user: cdc',
      '  password: pw',
      '  serverId: 7',
      '  prot: 3306',
      'kafka:',
      '  brokers: [k:9092]',
      'redis:',
      '  url: redis://r',
      'mappings:',
      '  - table: shop.users',
      '    keys:',
      '      - key: "user:{id}"',
      '        action: delete',
      '        delayedRedelete: soon',
    ].join('\n');
    expect(await problems(text)).toEqual([
      'source.prot: unknown key (did you mean port?); valid keys here: host, port, user, password, passwordFile, ' +
        'serverId, start, connectTimeout, tls, name (line 6)',
      'mappings[0].keys[0].action: got "delete"; expected one of invalidate, refresh (line 15)',
      'mappings[0].keys[0].delayedRedelete: got "soon"; expected a number with a unit ms, s, m or h, like 500ms, ' +
        '2s, 1.5m or 1h (line 16)',
    ]);
  });

  it('says where a YAML syntax error is', async () => {
    const file = await write('source:\n  host: db\n  user: cdc: 1\n');
    const message = await failure(loadConfig(file, { env: {} }));
    expect(message).toBe(
      `${file}: invalid YAML:\n  line 3, column 9: Nested mappings are not allowed in compact mappings`,
    );
  });

  it('rejects a key written twice', async () => {
    const file = await write(configText() + '\nredis:\n  url: redis://other:6379');
    const message = await failure(loadConfig(file, { env: {} }));
    expect(message).toContain('Map keys must be unique');
    expect(message).toMatch(/line 16, column 1/);
  });

  it('reads TLS files relative to the config file; tls: true means the system CAs', async () => {
    await writeFile(join(dir, 'ca.pem'), CA_PEM);
    await writeFile(join(dir, 'client.pem'), CA_PEM);
    await writeFile(
      join(dir, 'client-key.pem'),
      '-----BEGIN PRIVATE KEY-----\nk\n-----END PRIVATE KEY-----\n',
    );
    const file = await write(
      configText({
        source:
          'source:\n  host: db\n  user: cdc\n  password: pw\n  serverId: 7\n' +
          '  tls:\n    caFile: ca.pem\n    certFile: client.pem\n    keyFile: client-key.pem',
        kafka: 'kafka:\n  brokers: [k1:9092]\n  tls: ${KAFKA_TLS:-true}',
        redis: 'redis:\n  url: rediss://r:6380/0\n  username: app\n  tls:\n    rejectUnauthorized: false',
      }),
    );
    const config = await loadConfig(file, { env: {} });
    expect(config.source.tls).toEqual({
      ca: CA_PEM,
      cert: CA_PEM,
      key: expect.stringContaining('PRIVATE KEY') as unknown,
      rejectUnauthorized: true,
    });
    expect(config.kafka.tls).toEqual({ rejectUnauthorized: true });
    expect(config.kafka.sasl).toBeUndefined();
    expect(config.redis).toMatchObject({ username: 'app', tls: { rejectUnauthorized: false } });

    const plain = await loadConfig(file, { env: { KAFKA_TLS: 'false' } });
    expect(plain.kafka.tls).toBeUndefined();
  });

  it('turns TLS on for a rediss:// url, and takes the ACL user from the url', async () => {
    const file = await write(configText({ redis: 'redis:\n  url: rediss://reader@r:6380/0' }));
    const config = await loadConfig(file, { env: {} });
    expect(config.redis).toMatchObject({ username: 'reader', tls: { rejectUnauthorized: true } });
  });

  it('reads a SASL password from a file', async () => {
    await writeFile(join(dir, 'kafka-password'), 'p: w#d\n');
    const file = await write(
      configText({
        kafka:
          'kafka:\n  brokers: [k1:9093]\n  sasl:\n    mechanism: scram-sha-256\n    username: cs\n' +
          '    passwordFile: kafka-password',
      }),
    );
    const config = await loadConfig(file, { env: {} });
    expect(config.kafka.sasl).toEqual({ mechanism: 'scram-sha-256', username: 'cs', password: 'p: w#d' });
  });

  it('names an unknown key in a tls section', async () => {
    const lines = await problemTexts(
      configText({
        source: 'source:\n  host: db\n  user: cdc\n  password: pw\n  serverId: 7\n  tls:\n    verify: true',
      }),
    );
    expect(lines).toEqual([
      'source.tls.verify: unknown key; valid keys here: caFile, certFile, keyFile, rejectUnauthorized',
    ]);
  });

  it('rejects bad TLS and SASL settings, naming each path', async () => {
    await writeFile(join(dir, 'not-pem.txt'), 'hello');
    const lines = await problemTexts(
      configText({
        source:
          'source:\n  host: db\n  user: cdc\n  password: pw\n  serverId: 7\n' +
          '  tls:\n    certFile: not-pem.txt',
        kafka: 'kafka:\n  brokers: [k1:9092]\n  tls: yes\n  sasl:\n    mechanism: gssapi\n    username: cs',
        redis: 'redis:\n  url: redis://u@r:6379/0\n  username: other\n  tls:\n    caFile: missing.pem',
      }),
    );
    expect(lines).toEqual([
      'source.tls.keyFile: missing; a client certificate (certFile) needs its private key (keyFile)',
      expect.stringMatching(/^source\.tls\.certFile: ".*not-pem\.txt" holds no PEM block; expected a file/),
      'kafka.tls: got "yes"; expected true, false or a mapping with keys caFile, certFile, keyFile, rejectUnauthorized',
      'kafka.sasl.mechanism: got "gssapi"; expected one of plain, scram-sha-256, scram-sha-512',
      "kafka.sasl.password: missing; expected password (write '' for an empty one) or passwordFile",
      'redis.username: given together with a user in url; expected only one of them',
      'redis.tls: given with a redis:// url, which is a plain connection; expected a rediss:// url',
      expect.stringMatching(
        /^redis\.tls\.caFile: cannot read ".*missing\.pem": no such file; expected a readable/,
      ),
    ]);
  });

  it('never shows a secret in an error, not even from an unclosed ${', async () => {
    const secret = 'Zq9-s3cret:#x';
    const file = await write(
      configText({
        source: `source:\n  host: db\n  user: cdc\n  password: "\${PW:-${secret}"\n  serverId: 7`,
        kafka: `kafka:\n  brokers: [k1:9092]\n  sasl:\n    mechanism: plain\n    username: cs\n    password: "${secret}\${"`,
        redis: `redis:\n  url: "redis://:${secret}@r:6379/\${DB"`,
      }),
    );
    const message = await failure(loadConfig(file, { env: {} }));
    expect(message).toContain('source.password: "${" at character 1 of the value is never closed');
    expect(message).toContain('kafka.sasl.password: "${" at character');
    expect(message).toContain('redis.url: "${" at character');
    expect(message).not.toContain(secret);
    expect(message).not.toContain('s3cret');
  });

  it('says a missing config file is missing and how to name another', async () => {
    const file = join(dir, 'absent.yaml');
    const message = await failure(loadConfig(file, { env: {} }));
    expect(message).toBe(
      `${file}: config file not found (looked for ${file}); pass -c/--config <file> or set CACHESYNC_CONFIG`,
    );
  });
});

describe('resolveConfigPath', () => {
  it('prefers -c, then CACHESYNC_CONFIG, then the default', () => {
    expect(resolveConfigPath('cli.yaml', { CACHESYNC_CONFIG: 'env.yaml' })).toBe('cli.yaml');
    expect(resolveConfigPath(undefined, { CACHESYNC_CONFIG: 'env.yaml' })).toBe('env.yaml');
    expect(resolveConfigPath(undefined, {})).toBe(DEFAULT_CONFIG_PATH);
    expect(resolveConfigPath('', { CACHESYNC_CONFIG: '' })).toBe('config/cachesync.yaml');
  });
});

describe('audit config', () => {
  it('samples 1% of writes 2 s after them by default', async () => {
    const config = await loadConfig(await write(configText()), { env: {} });
    expect(config.audit).toEqual({ sampleRate: 0.01, delayMs: 2000 });
  });

  it('takes a rate from 0 (off) to 1 and a delay; anything else names the path', async () => {
    const config = await loadConfig(
      await write(configText({ extra: 'audit:\n  sampleRate: 1\n  delay: 500ms' })),
      {
        env: {},
      },
    );
    expect(config.audit).toEqual({ sampleRate: 1, delayMs: 500 });
    expect(await problemTexts(configText({ extra: 'audit:\n  sampleRate: 1.5' }))).toEqual([
      'audit.sampleRate: got "1.5"; expected a fraction from 0 to 1, like 0.01 (0 turns the audit off)',
    ]);
  });
});
