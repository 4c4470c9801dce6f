import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { Kafka, logLevel } from 'kafkajs';
import mysql from 'mysql2/promise';
import { brokerArgs, formatStorage, singleNodeProperties, writeBrokerFiles } from './kafka-broker.js';
import {
  findBinary,
  isAlive,
  portInUse,
  readPid,
  retryWhilePortBusy,
  spawnDaemon,
  stopByPidFile,
  waitFor,
} from './process.js';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(here, '..', '..');

export const SERVERS = ['mariadb', 'redis', 'kafka'] as const;
export type ServerName = (typeof SERVERS)[number];

/** Credentials of the CDC user the stack creates: exactly the grants cachesync documents. */
export const CDC_USER = { user: 'cachesync', password: 'cachesync' } as const;

export interface StackEndpoints {
  mysql: { host: string; port: number; user: string; password: string };
  /** The replication user (REPLICATION SLAVE, REPLICATION CLIENT, SELECT). */
  cdc: { host: string; port: number; user: string; password: string };
  redisUrl: string;
  kafkaBrokers: string[];
}

export interface LocalStackOptions {
  /** Work dir for data, logs and pid files (git-ignored). */
  dir: string;
  /** MariaDB listens on basePort, Redis on +1, Kafka on +2 (its controller on +3). */
  basePort: number;
  log?: (msg: string) => void;
}

const KAFKA_VERSION = '4.1.1';

/**
 * Real MariaDB, Redis and Kafka servers on loopback, each in its own data dir under `dir`, each
 * started, stopped, killed and restarted on its own by the pid this stack recorded.
 */
export class LocalStack {
  readonly dir: string;
  readonly ports: Record<ServerName | 'kafkaController', number>;
  private readonly log: (msg: string) => void;

  constructor(opts: LocalStackOptions) {
    this.dir = resolve(opts.dir);
    this.log = opts.log ?? (() => {});
    this.ports = {
      mariadb: opts.basePort,
      redis: opts.basePort + 1,
      kafka: opts.basePort + 2,
      kafkaController: opts.basePort + 3,
    };
  }

  get endpoints(): StackEndpoints {
    return {
      mysql: { host: '127.0.0.1', port: this.ports.mariadb, user: 'root', password: '' },
      cdc: { host: '127.0.0.1', port: this.ports.mariadb, ...CDC_USER },
      redisUrl: `redis://127.0.0.1:${this.ports.redis}`,
      kafkaBrokers: [`127.0.0.1:${this.ports.kafka}`],
    };
  }

  /** Starts every server that is not already running; `fresh` first stops them and wipes their data. */
  async up(opts: { fresh?: boolean; only?: readonly ServerName[] } = {}): Promise<StackEndpoints> {
    const servers = opts.only ?? SERVERS;
    if (opts.fresh) {
      await this.down(servers);
      for (const s of servers) rmSync(this.serverDir(s), { recursive: true, force: true });
    }
    // Kafka's JVM is the slowest to come up: start it alongside the others.
    await Promise.all(servers.map((s) => this.start(s)));
    return this.endpoints;
  }

  /** Stops the given servers (default: all) gracefully, by their recorded pids. */
  async down(servers: readonly ServerName[] = SERVERS): Promise<void> {
    await Promise.all(servers.map((s) => this.stop(s)));
  }

  isRunning(server: ServerName): boolean {
    const pid = readPid(this.pidFile(server));
    return pid !== undefined && isAlive(pid);
  }

  pid(server: ServerName): number | undefined {
    return readPid(this.pidFile(server));
  }

  async start(server: ServerName): Promise<void> {
    if (this.isRunning(server)) return;
    const port = this.ports[server];
    if (await portInUse(port)) {
      throw new Error(
        `port ${port} for ${server} is taken by a process this stack did not start. ` +
          `Stop it, or pick other ports with CACHESYNC_STACK_BASE_PORT.`,
      );
    }
    mkdirSync(this.serverDir(server), { recursive: true });
    const started = Date.now();
    await retryWhilePortBusy(async () => {
      switch (server) {
        case 'mariadb':
          return this.startMariadb();
        case 'redis':
          return this.startRedis();
        case 'kafka':
          return this.startKafka();
      }
    });
    this.log(`${server} up on 127.0.0.1:${port} in ${Date.now() - started} ms (pid ${this.pid(server)})`);
  }

  /** Graceful stop (SIGTERM, then SIGKILL after the grace period). */
  async stop(server: ServerName): Promise<void> {
    await stopByPidFile(this.pidFile(server));
  }

  /** A crash: SIGKILL, no chance to flush. */
  async kill(server: ServerName): Promise<void> {
    await stopByPidFile(this.pidFile(server), { signal: 'SIGKILL' });
  }

  /**
   * Freezes a server with SIGSTOP: its connections stay open and nothing answers, as in a network
   * partition or a stuck server. `thaw` lets it go on.
   */
  freeze(server: ServerName): void {
    const pid = this.pid(server);
    if (pid === undefined || !isAlive(pid)) throw new Error(`${server} is not running`);
    process.kill(pid, 'SIGSTOP');
  }

  thaw(server: ServerName): void {
    const pid = this.pid(server);
    if (pid !== undefined && isAlive(pid)) process.kill(pid, 'SIGCONT');
  }

  async restart(server: ServerName): Promise<void> {
    await this.stop(server);
    await this.start(server);
  }

  private serverDir(server: ServerName): string {
    return join(this.dir, server);
  }

  private pidFile(server: ServerName): string {
    return join(this.serverDir(server), 'server.pid');
  }

  private logFile(server: ServerName): string {
    return join(this.serverDir(server), 'server.log');
  }

  private async startMariadb(): Promise<void> {
    const mariadbd = findBinary('mariadbd');
    const base = this.serverDir('mariadb');
    const data = join(base, 'data');
    const fresh = !existsSync(join(data, 'mysql'));
    const asRoot = process.getuid?.() === 0 ? ['--user=root'] : [];
    if (fresh) {
      rmSync(data, { recursive: true, force: true });
      await run(findBinary('mariadb-install-db'), [
        '--no-defaults',
        `--datadir=${data}`,
        '--auth-root-authentication-method=normal',
        '--skip-test-db',
        ...asRoot,
      ]);
    }
    const pid = spawnDaemon(
      mariadbd,
      [
        '--no-defaults',
        ...asRoot,
        `--datadir=${data}`,
        `--socket=${join(base, 'mysqld.sock')}`,
        `--port=${this.ports.mariadb}`,
        '--bind-address=127.0.0.1',
        '--skip-name-resolve',
        '--server-id=1',
        `--log-bin=${join(data, 'binlog')}`,
        '--binlog-format=ROW',
        '--binlog-row-image=FULL',
        '--binlog-row-metadata=FULL',
        '--innodb-buffer-pool-size=128M',
        '--innodb-log-file-size=64M',
        '--max-connections=500',
        '--character-set-server=utf8mb4',
        '--collation-server=utf8mb4_unicode_ci',
        `--log-error=${this.logFile('mariadb')}`,
      ],
      { logFile: this.logFile('mariadb'), pidFile: this.pidFile('mariadb') },
    );
    const ep = this.endpoints.mysql;
    await waitFor(
      'mariadbd',
      async () => {
        const conn = await mysql.createConnection({ ...ep, connectTimeout: 1000 });
        await conn.end();
        return true;
      },
      { timeoutMs: 60_000, pid, logFile: this.logFile('mariadb') },
    );
    // Every start, not only the first: a start retried after its port was busy finds the data
    // directory made already (both statements are idempotent).
    const conn = await mysql.createConnection(ep);
    try {
      await conn.query(`CREATE USER IF NOT EXISTS ?@'%' IDENTIFIED BY ?`, [CDC_USER.user, CDC_USER.password]);
      await conn.query(`GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO ?@'%'`, [
        CDC_USER.user,
      ]);
    } finally {
      await conn.end();
    }
  }

  private async startRedis(): Promise<void> {
    const base = this.serverDir('redis');
    const pid = spawnDaemon(
      findBinary('redis-server'),
      [
        '--port',
        String(this.ports.redis),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        base,
        '--daemonize',
        'no',
      ],
      { logFile: this.logFile('redis'), pidFile: this.pidFile('redis') },
    );
    await waitFor(
      'redis-server',
      async () => {
        const redis = new Redis(this.endpoints.redisUrl, {
          lazyConnect: true,
          maxRetriesPerRequest: 0,
          retryStrategy: () => null,
        });
        redis.on('error', () => {});
        try {
          await redis.connect();
          return (await redis.ping()) === 'PONG';
        } finally {
          redis.disconnect();
        }
      },
      { timeoutMs: 20_000, pid, logFile: this.logFile('redis') },
    );
  }

  private async startKafka(): Promise<void> {
    const java = findBinary('java');
    const libs = await ensureKafkaJars(join(this.dir, '..', 'cache'), this.log);
    const base = this.serverDir('kafka');
    const data = join(base, 'data');
    const { kafka, kafkaController } = this.ports;
    const files = writeBrokerFiles(base, libs, [
      ...singleNodeProperties({ controllerPort: kafkaController, dataDir: data, internalPartitions: 4 }),
      `listeners=PLAINTEXT://127.0.0.1:${kafka},CONTROLLER://127.0.0.1:${kafkaController}`,
      `advertised.listeners=PLAINTEXT://127.0.0.1:${kafka}`,
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      'inter.broker.listener.name=PLAINTEXT',
      // Lets tests run consumers with a short session (fast recovery after a kill -9).
      'group.min.session.timeout.ms=1000',
    ]);
    if (!existsSync(join(data, 'meta.properties'))) {
      rmSync(data, { recursive: true, force: true });
      await formatStorage(java, files);
    }
    const pid = spawnDaemon(java, brokerArgs(files, { min: '256m', max: '768m' }), {
      logFile: this.logFile('kafka'),
      pidFile: this.pidFile('kafka'),
    });
    await waitFor(
      'kafka',
      async () => {
        const admin = new Kafka({
          brokers: this.endpoints.kafkaBrokers,
          logLevel: logLevel.NOTHING,
          retry: { retries: 0 },
        }).admin();
        try {
          await admin.connect();
          const cluster = await admin.describeCluster();
          return cluster.brokers.length > 0;
        } finally {
          await admin.disconnect();
        }
      },
      { timeoutMs: 90_000, pid, logFile: this.logFile('kafka') },
    );
  }
}

/**
 * Resolves Kafka and its runtime dependencies from Maven Central once, into `cacheDir`; later
 * calls reuse them. Returns the dir holding the jars.
 */
export async function ensureKafkaJars(
  cacheDir: string,
  log: (msg: string) => void = () => {},
): Promise<string> {
  const libs = join(cacheDir, `kafka-${KAFKA_VERSION}`, 'libs');
  if (existsSync(join(libs, `kafka_2.13-${KAFKA_VERSION}.jar`))) return libs;
  const mvn = findBinary('mvn');
  const staging = `${libs}.partial-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(dirname(libs), { recursive: true });
  log(`fetching Apache Kafka ${KAFKA_VERSION} jars from Maven Central (first run only)`);
  const args = [
    '-q',
    '-B',
    '-f',
    join(here, 'kafka-pom.xml'),
    'dependency:copy-dependencies',
    '-DincludeScope=runtime',
    `-DoutputDirectory=${staging}`,
  ];
  if (process.env.MAVEN_REPO_LOCAL) args.push(`-Dmaven.repo.local=${process.env.MAVEN_REPO_LOCAL}`);
  try {
    await run(mvn, args, { maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`mvn could not fetch the Kafka jars: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
  if (readdirSync(staging).length === 0) throw new Error('mvn fetched no Kafka jars');
  // Another process may have finished first; either copy is complete.
  if (!existsSync(libs)) renameSync(staging, libs);
  else rmSync(staging, { recursive: true, force: true });
  return libs;
}

/**
 * The `source`, `kafka` and `redis` sections of a cachesync config pointing at a stack, for the
 * tests and the benchmark: topics and group named after `name`, a random replica server id.
 */
export function stackConfigSections(
  endpoints: StackEndpoints,
  opts: { name: string; partitions?: number; redisYaml?: string },
): string[] {
  return [
    'source:',
    `  host: ${endpoints.cdc.host}`,
    `  port: ${endpoints.cdc.port}`,
    `  user: ${endpoints.cdc.user}`,
    `  password: "${endpoints.cdc.password}"`,
    `  serverId: ${1000 + Math.floor(Math.random() * 1_000_000)}`,
    'kafka:',
    `  brokers: [${endpoints.kafkaBrokers.join(', ')}]`,
    `  topic: ${opts.name}.changes`,
    `  dlqTopic: ${opts.name}.dlq`,
    `  groupId: ${opts.name}`,
    ...(opts.partitions ? [`  partitions: ${opts.partitions}`] : []),
    'redis:',
    opts.redisYaml ?? `  url: ${endpoints.redisUrl}`,
  ];
}
