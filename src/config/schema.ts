import { z } from 'zod';
import { KeyTemplate } from '../core/key-template.js';
import { formatDuration, parseDuration } from './duration.js';
import { describeValue, quote, unknownKeyMessage, type Problem } from './problems.js';
import type { StartPosition } from './types.js';

// The YAML is parsed with the failsafe schema, so every scalar arrives here as a string and this
// file alone decides types. That is what lets `port: ${METRICS_PORT:-9464}` become a number, and
// keeps `password: 0123` or `password: no` the string the user wrote.

// Cross-field checks run even when a field already failed, so that one run reports every problem,
// but only on a value of the shape they read.
const ON_MAPPING = { when: (payload: { value: unknown }) => isMapping(payload.value) };
const ON_LIST = { when: (payload: { value: unknown }) => Array.isArray(payload.value) };

const IDENTIFIER = /^(?!\d+$)[A-Za-z0-9_$]+$/;
const TABLE = /^[^\s.`]+\.[^\s.`]+$/;
const BROKER = /^(?:\[[0-9A-Fa-f:.]+\]|[^\s:/[\]]+):\d{1,5}$/;
const TOPIC = /^[A-Za-z0-9._-]{1,249}$/;
const UNSIGNED = /^\+?\d+$/;
const DECIMAL = /^\d*\.?\d+$/;

const MARIADB_GTID = /^\d+-\d+-\d+(?:,\d+-\d+-\d+)*$/;
const UUID = '[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}';
const MYSQL_GTID_ENTRY = `${UUID}(?::(?:[A-Za-z_][A-Za-z0-9_]{0,31}|\\d+(?:-\\d+)?))+`;
const MYSQL_GTID = new RegExp(`^${MYSQL_GTID_ENTRY}(?:,${MYSQL_GTID_ENTRY})*$`);
const FILE_POSITION = /^([^\s:]+\.\d+):(\d+)$/;
export const START_FORMS =
  'end, beginning, a GTID position (0-1-1234, or uuid:1-5 on MySQL) or file:position (binlog.000003:4)';

/** Marks the catch-all check that stands in for each unknown key, so its issue can be reworded. */
interface UnknownKeyParams {
  unknownKeyOf: readonly string[];
}

// ---------------------------------------------------------------------------------------------
// Building blocks

/**
 * A scalar field: a string converted by `convert`, which returns undefined for a value that is
 * simply not one of the expected forms, or throws an Error whose message says what is wrong.
 */
function scalar<T>(expected: string, convert: (text: string) => T | undefined) {
  return z
    .string({ error: (issue) => `${describeValue(issue.input)}; expected ${expected}` })
    .transform((text, ctx) => {
      try {
        const value = convert(text);
        if (value !== undefined) return value;
        ctx.addIssue({ code: 'custom', message: `got ${quote(text)}; expected ${expected}`, input: text });
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message, input: text });
      }
      return z.NEVER;
    });
}

function text(expected: string) {
  return scalar(expected, (value) => (value.trim() ? value : undefined));
}

function matching(pattern: RegExp, expected: string) {
  return scalar(expected, (value) => (pattern.test(value) ? value : undefined));
}

function integer(min: number, max: number, expected = `an integer from ${min} to ${max}`) {
  return scalar(expected, (value) => {
    const trimmed = value.trim();
    const n = /^[+-]?\d+$/.test(trimmed) ? Number(trimmed) : NaN;
    return Number.isSafeInteger(n) && n >= min && n <= max ? n : undefined;
  });
}

function boolean() {
  return scalar('true or false', (value) => ({ true: true, false: false })[value.trim()]);
}

function atLeastOne() {
  return integer(1, Number.MAX_SAFE_INTEGER, 'a whole number of at least 1');
}

function oneOf<const T extends string>(values: readonly T[]) {
  return scalar(`one of ${values.join(', ')}`, (value) => values.find((v) => v === value));
}

function duration({ positive = false } = {}) {
  return scalar('a duration', (value) => {
    const ms = parseDuration(value);
    if (positive && ms === 0) {
      throw new Error(`got ${quote(value)}; expected a duration above 0, like 500ms or 1h`);
    }
    return ms;
  });
}

/**
 * A list field. A single string is split on commas, because a list that comes from one
 * environment variable (`brokers: ${KAFKA_BROKERS}`) can only arrive as a string.
 */
function list<T extends z.ZodType>(item: T, what: { one: string; many: string }) {
  return z.preprocess(
    (value) => (typeof value === 'string' ? splitList(value) : value),
    z
      .array(item, { error: (issue) => `${describeValue(issue.input)}; expected a list of ${what.many}` })
      .min(1, { error: `got an empty list; expected at least one ${what.one}` }),
  );
}

function splitList(value: string): string[] {
  return value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

/**
 * A mapping whose unknown keys are errors. Each unknown key is reported on its own, with the keys
 * valid at that level; a plain strict object would report them as one issue with no such list.
 */
function section<Shape extends z.ZodRawShape>(shape: Shape, opts: { orElse?: string } = {}) {
  const validKeys = Object.keys(shape);
  const expected = `${opts.orElse ? `${opts.orElse} or ` : ''}a mapping with keys ${validKeys.join(', ')}`;
  const unknownKey = z.custom<never>(() => false, {
    params: { unknownKeyOf: validKeys } satisfies UnknownKeyParams,
  });
  // Typed as strict: a value that parses has no keys beyond the shape, which is what strict means.
  return z
    .object(shape, { error: (issue) => `${describeValue(issue.input)}; expected ${expected}` })
    .catchall(unknownKey) as unknown as z.ZodObject<Shape, z.core.$strict>;
}

type Refinement = z.core.$RefinementCtx;

// The value seen by a cross-field check may be partly unparsed, so checks read it loosely.
type Loose = Readonly<Record<string, unknown>>;

function isMapping(value: unknown): value is Loose {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function present(value: Loose, key: string): boolean {
  return value[key] !== undefined;
}

function issueAt(ctx: Refinement, path: PropertyKey[], message: string): void {
  ctx.addIssue({ code: 'custom', path, message, input: undefined });
}

// ---------------------------------------------------------------------------------------------
// Field parsers

/** `end`, `beginning`, a GTID position or set, or `file:pos`; undefined for anything else. */
export function parseStart(value: string): StartPosition | undefined {
  const trimmed = value.trim();
  if (trimmed === 'end' || trimmed === 'beginning') return { kind: trimmed };
  const file = FILE_POSITION.exec(trimmed);
  if (file) {
    const position = Number(file[2]);
    if (position < 4) {
      throw new Error(
        `got ${quote(value)}: a binlog file's first event is at 4; expected file:position >= 4`,
      );
    }
    return { kind: 'file', filename: file[1] ?? '', position };
  }
  const gtidSet = trimmed.replace(/\s+/g, '');
  if (MARIADB_GTID.test(gtidSet) || MYSQL_GTID.test(gtidSet)) return { kind: 'gtid', gtidSet };
  return undefined;
}

function parseTemplate(value: string): KeyTemplate {
  let template: KeyTemplate;
  try {
    template = KeyTemplate.parse(value);
  } catch (err) {
    throw new Error(`got ${quote(value)}: ${(err as Error).message}`);
  }
  if (!template.hasLiteralPrefix) {
    // A truncate finds a table's keys by SCAN from the literal prefix: without one it would have
    // to scan, and could claim, the application's keys.
    throw new Error(
      `got ${quote(value)}: a key template must start with literal text, like "user:{id}", so that ` +
        'a truncate of the table finds its keys without touching others; put a fixed prefix first',
    );
  }
  return template;
}

function checkRedisUrl(value: string): string {
  // The value is never echoed: a Redis URL may carry a password.
  const valid = 'expected redis://[user:password@]host[:port][/db] or rediss://...';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`not a URL; ${valid}`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new Error(`scheme ${quote(url.protocol)} is not redis: or rediss:; ${valid}`);
  }
  if (!/^\/?\d*$/.test(url.pathname))
    throw new Error(`the database after the host must be a number; ${valid}`);
  return value;
}

function parseFraction(value: string): number | undefined {
  const trimmed = value.trim();
  const n = DECIMAL.test(trimmed) ? Number(trimmed) : NaN;
  return n >= 0 && n < 1 ? n : undefined;
}

function parseRate(value: string): number | undefined {
  const trimmed = value.trim();
  const n = DECIMAL.test(trimmed) ? Number(trimmed) : NaN;
  return n >= 0 && n <= 1 ? n : undefined;
}

function parseReplicationFactor(value: string): number | undefined {
  const trimmed = value.trim();
  if (trimmed === '-1') return -1;
  const n = UNSIGNED.test(trimmed) ? Number(trimmed) : NaN;
  return n >= 1 && n <= 32_767 ? n : undefined;
}

// ---------------------------------------------------------------------------------------------
// Cross-field rules

/** A `*File` secret replaces its plain field; both at once would leave the user guessing which won. */
function secretOnce(required: boolean) {
  return (value: Loose, ctx: Refinement): void => {
    if (present(value, 'password') && present(value, 'passwordFile')) {
      issueAt(
        ctx,
        ['passwordFile'],
        'given together with password; expected only one of password or passwordFile',
      );
    } else if (required && !present(value, 'password') && !present(value, 'passwordFile')) {
      issueAt(ctx, ['password'], "missing; expected password (write '' for an empty one) or passwordFile");
    }
  };
}

const REFRESH_ONLY = ['columns', 'format', 'ttl', 'ttlJitter'] as const;

function keyRules(value: Loose, ctx: Refinement): void {
  if (value.action === 'invalidate') {
    for (const field of REFRESH_ONLY.filter((f) => present(value, f))) {
      issueAt(ctx, [field], 'only valid with action: refresh; remove it, or use action: refresh');
    }
  } else if (present(value, 'ttlJitter') && !present(value, 'ttl')) {
    issueAt(ctx, ['ttlJitter'], 'spreads a ttl, but there is no ttl; add ttl or remove ttlJitter');
  }
}

function distinctTables(mappings: readonly unknown[], ctx: Refinement): void {
  const firstIndex = new Map<string, number>();
  mappings.forEach((mapping, i) => {
    const table = isMapping(mapping) ? mapping.table : undefined;
    if (typeof table !== 'string') return;
    const first = firstIndex.get(table);
    if (first === undefined) firstIndex.set(table, i);
    else {
      issueAt(
        ctx,
        [i, 'table'],
        `${table} is already mapped at mappings[${first}]; expected each table once, with all its keys in that mapping`,
      );
    }
  });
}

function distinctTopics(value: Loose, ctx: Refinement): void {
  const topics: Loose = { ...value, checkpointTopic: checkpointTopicOf(value) };
  const seen = new Map<unknown, string>();
  for (const field of ['topic', 'dlqTopic', 'checkpointTopic']) {
    const topic = topics[field];
    if (typeof topic !== 'string') continue;
    const other = seen.get(topic);
    if (other) issueAt(ctx, [field], `${quote(topic)} is also ${other}; expected a topic of its own`);
    else seen.set(topic, field);
  }
}

/** The checkpoint topic as written, else the default `<topic>.checkpoint`. */
function checkpointTopicOf(kafka: { topic?: unknown; checkpointTopic?: unknown }): unknown {
  return kafka.checkpointTopic ?? (typeof kafka.topic === 'string' ? `${kafka.topic}.checkpoint` : undefined);
}

/** A client certificate is a pair: one without the other cannot authenticate. */
function certificatePair(value: Loose, ctx: Refinement): void {
  if (present(value, 'certFile') && !present(value, 'keyFile')) {
    issueAt(ctx, ['keyFile'], 'missing; a client certificate (certFile) needs its private key (keyFile)');
  } else if (present(value, 'keyFile') && !present(value, 'certFile')) {
    issueAt(ctx, ['certFile'], 'missing; a private key (keyFile) needs its client certificate (certFile)');
  }
}

/** A user name in the url and in `username` would leave the reader guessing which one logs in. */
function redisUserOnce(value: Loose, ctx: Refinement): void {
  if (!present(value, 'username') || typeof value.url !== 'string') return;
  let user = '';
  try {
    user = new URL(value.url).username;
  } catch {
    return; // the url's own check reports it
  }
  if (user) issueAt(ctx, ['username'], 'given together with a user in url; expected only one of them');
}

/** `tls` asks for TLS, `redis://` for a plain connection: a contradiction better caught here. */
function redisTlsScheme(value: Loose, ctx: Refinement): void {
  if (!isMapping(value.tls) || typeof value.url !== 'string') return;
  if (/^redis:/i.test(value.url.trim())) {
    issueAt(ctx, ['tls'], 'given with a redis:// url, which is a plain connection; expected a rediss:// url');
  }
}

function retryBounds(value: Loose, ctx: Refinement): void {
  const { retryInitial, retryMax } = value;
  if (typeof retryInitial === 'number' && typeof retryMax === 'number' && retryMax < retryInitial) {
    issueAt(
      ctx,
      ['retryMax'],
      `${formatDuration(retryMax)} is below retryInitial ${formatDuration(retryInitial)}; expected at least retryInitial`,
    );
  }
}

function heartbeatBounds(value: Loose, ctx: Refinement): void {
  const { sessionTimeout, heartbeatInterval } = value;
  if (
    typeof sessionTimeout === 'number' &&
    typeof heartbeatInterval === 'number' &&
    heartbeatInterval * 3 > sessionTimeout
  ) {
    issueAt(
      ctx,
      ['heartbeatInterval'],
      `${formatDuration(heartbeatInterval)} is above a third of sessionTimeout ${formatDuration(sessionTimeout)}; expected at most ${formatDuration(Math.floor(sessionTimeout / 3))}`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// The file

const columnList = list(matching(IDENTIFIER, 'a column name of letters, digits, _ and $'), {
  one: 'column',
  many: 'column names',
});
const topic = matching(TOPIC, 'a Kafka topic name of letters, digits, ., _ and -');

/**
 * TLS to one server: `true` (the system CAs), `false`, or a mapping. The files are read at load,
 * relative to the config file; the compiled form holds their contents.
 */
const tlsSchema = z.preprocess(
  // `tls: true` is TLS with every default; `tls: false` is the same as leaving it out.
  (value) => (typeof value === 'string' && /^(true|false)$/.test(value.trim()) ? tlsFlag(value) : value),
  section(
    {
      caFile: text('the path of a PEM file of CA certificates').optional(),
      certFile: text('the path of a PEM client certificate').optional(),
      keyFile: text('the path of the PEM private key of certFile').optional(),
      rejectUnauthorized: boolean().default(true),
    },
    { orElse: 'true, false' },
  )
    .superRefine(certificatePair, ON_MAPPING)
    .optional(),
);

function tlsFlag(value: string): Record<string, never> | undefined {
  return value.trim() === 'true' ? {} : undefined;
}

const SASL_MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;

const saslSchema = section({
  mechanism: oneOf(SASL_MECHANISMS),
  username: text('a SASL user name'),
  password: scalar("a string (write '' for an empty one)", (value) => value).optional(),
  passwordFile: text('the path of a file holding the password').optional(),
}).superRefine(secretOnce(true), ON_MAPPING);

const sourceSchema = section({
  host: text('a host name or IP address'),
  port: integer(1, 65_535).default(3306),
  user: text('a MySQL user name'),
  password: scalar("a string (write '' for an empty one)", (value) => value).optional(),
  passwordFile: text('the path of a file holding the password').optional(),
  serverId: integer(1, 4_294_967_295),
  start: scalar(START_FORMS, parseStart).default({ kind: 'end' }),
  connectTimeout: duration({ positive: true }).default(10_000),
  tls: tlsSchema,
  name: matching(/^[A-Za-z0-9_.-]{1,64}$/, 'a source name of letters, digits, ., _ and -').optional(),
}).superRefine(secretOnce(true), ON_MAPPING);

const kafkaSchema = section({
  brokers: list(matching(BROKER, 'host:port, like 127.0.0.1:9092'), {
    one: 'broker',
    many: 'brokers as host:port',
  }),
  clientId: text('a client id').default('cachesync'),
  topic: topic.default('cachesync.changes'),
  dlqTopic: topic.default('cachesync.dlq'),
  checkpointTopic: topic.optional(),
  groupId: text('a consumer group id').default('cachesync'),
  partitions: atLeastOne().default(6),
  replicationFactor: scalar(
    '-1 (the broker default) or an integer from 1 to 32767',
    parseReplicationFactor,
  ).default(-1),
  tls: tlsSchema,
  sasl: saslSchema.optional(),
})
  // Before the transform: a check on the transform's output would not run once a field has failed.
  .superRefine(distinctTopics, ON_MAPPING)
  .transform((kafka) => ({
    ...kafka,
    checkpointTopic: kafka.checkpointTopic ?? `${kafka.topic}.checkpoint`,
  }));

const redisSchema = section({
  url: scalar('a redis:// or rediss:// URL', checkRedisUrl),
  cluster: boolean().default(false),
  username: text('a Redis ACL user name').optional(),
  password: scalar('a string', (value) => value).optional(),
  passwordFile: text('the path of a file holding the password').optional(),
  tls: tlsSchema,
})
  .superRefine(secretOnce(false), ON_MAPPING)
  .superRefine(redisUserOnce, ON_MAPPING)
  .superRefine(redisTlsScheme, ON_MAPPING);

const metricsSchema = section({
  port: integer(0, 65_535).default(9464),
  host: text('an address to listen on, like 0.0.0.0').default('0.0.0.0'),
});

const tailerSchema = section({
  maxBufferedEvents: atLeastOne().default(4_000),
  maxBufferedBytes: atLeastOne().default(64 * 1024 * 1024),
  batchSize: atLeastOne().default(1_000),
  maxBatchBytes: atLeastOne().default(512 * 1024),
  linger: duration().default(0),
  compression: oneOf(['gzip', 'none']).default('gzip'),
});

const consumerSchema = section({
  maxAttempts: atLeastOne().default(5),
  retryInitial: duration({ positive: true }).default(100),
  retryMax: duration({ positive: true }).default(10_000),
  partitionsConcurrently: atLeastOne().default(3),
  maxPendingRedeletes: atLeastOne().default(100_000),
  maxFetchBytes: atLeastOne().default(256 * 1024),
  sessionTimeout: duration({ positive: true }).default(6000),
  heartbeatInterval: duration({ positive: true }).default(1000),
  guardTtl: duration({ positive: true }).optional(),
})
  .superRefine(retryBounds, ON_MAPPING)
  .superRefine(heartbeatBounds, ON_MAPPING);

const auditSchema = section({
  sampleRate: scalar('a fraction from 0 to 1, like 0.01 (0 turns the audit off)', parseRate).default(0.01),
  delay: duration({ positive: true }).default(2000),
});

const snapshotSchema = section({
  onFirstStart: boolean().default(false),
});

const logSchema = section({
  level: oneOf(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
});

const keySchema = section({
  key: scalar('a key template such as "user:{id}"', parseTemplate),
  action: oneOf(['invalidate', 'refresh']),
  columns: columnList.optional(),
  // No defaults here: the refresh-only rule must see whether format and ttlJitter were written.
  format: oneOf(['json', 'hash']).optional(),
  ttl: duration({ positive: true }).optional(),
  ttlJitter: scalar('a number from 0 up to but not including 1, like 0.1', parseFraction).optional(),
  delayedRedelete: duration({ positive: true }).optional(),
}).superRefine(keyRules, ON_MAPPING);

const mappingSchema = section({
  table: matching(TABLE, 'db.table, like shop.users'),
  keys: z
    .array(keySchema, {
      error: (issue) => `${describeValue(issue.input)}; expected a list of keys like - key: "user:{id}"`,
    })
    .min(1, { error: 'got an empty list; expected at least one key' }),
  onlyWhenChanged: columnList.optional(),
});

/** The config file: what SPEC.md documents, plus the optional tuning sections in types.ts. */
export const configSchema = section({
  source: sourceSchema,
  kafka: kafkaSchema,
  redis: redisSchema,
  metrics: metricsSchema.prefault({}),
  tailer: tailerSchema.prefault({}),
  consumer: consumerSchema.prefault({}),
  audit: auditSchema.prefault({}),
  snapshot: snapshotSchema.prefault({}),
  log: logSchema.prefault({}),
  mappings: z
    .array(mappingSchema, {
      error: (issue) => `${describeValue(issue.input)}; expected a list of mappings like - table: shop.users`,
    })
    .min(1, { error: 'got an empty list; expected at least one mapping' })
    .superRefine(distinctTables, ON_LIST),
});

/** The validated file: types decided, durations in ms, defaults filled; secrets not yet read. */
export type ConfigFile = z.output<typeof configSchema>;

/**
 * Validates an interpolated YAML tree. Returns every problem found, each at its path, in the
 * order they appear in the schema.
 */
export function validateConfig(
  tree: unknown,
): { ok: true; config: ConfigFile } | { ok: false; problems: Problem[] } {
  const result = configSchema.safeParse(tree);
  if (result.success) return { ok: true, config: result.data };
  return { ok: false, problems: result.error.issues.map(toProblem) };
}

function toProblem(issue: z.core.$ZodIssue): Problem {
  const params =
    issue.code === 'custom' ? (issue.params as Partial<UnknownKeyParams> | undefined) : undefined;
  if (params?.unknownKeyOf) {
    return { path: issue.path, message: unknownKeyMessage(String(issue.path.at(-1)), params.unknownKeyOf) };
  }
  return { path: issue.path, message: issue.message };
}
