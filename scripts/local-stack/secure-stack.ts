import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { Kafka, logLevel } from 'kafkajs';
import mysql from 'mysql2/promise';
import { brokerArgs, formatStorage, singleNodeProperties, writeBrokerFiles } from './kafka-broker.js';
import { ensureKafkaJars } from './local-stack.js';
import { findBinary, retryWhilePortBusy, spawnDaemon, stopByPidFile, waitFor } from './process.js';

const run = promisify(execFile);

/**
 * PEM files made at start: a CA, one server certificate for every server (also good as a client
 * certificate, which Redis Cluster nodes present to each other on the TLS cluster bus), one client
 * certificate.
 */
export interface Certificates {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** The least-privilege users the secure stack creates, with their passwords. */
export interface SecureUsers {
  /** MariaDB: REPLICATION SLAVE, REPLICATION CLIENT, SELECT, and REQUIRE X509 (TLS and a client certificate). */
  mysql: { user: string; password: string };
  /** MariaDB admin with every privilege, for the tests' own queries (over TLS too: the server requires it). */
  mysqlRoot: { user: string; password: string };
  /** Redis ACL user with the rule in {@link redisAclRule}. */
  redis: { user: string; password: string };
  /** Redis `default` user, for the tests' own look at the keys. */
  redisAdmin: { password: string };
  /** Kafka SCRAM-SHA-512 user, allowed by ACLs the test grants. */
  kafka: { user: string; password: string };
}

/**
 * The Redis ACL rule cachesync needs: the commands its consumers, `check` and `dlq replay` send,
 * on its own meta keys and on the key patterns the mappings render (`keyPatterns`).
 */
export function redisAclRule(keyPatterns: readonly string[], metaPrefix = 'cachesync:'): string {
  return [
    'resetkeys',
    `~${metaPrefix}*`,
    ...keyPatterns.map((p) => `~${p}`),
    'resetchannels',
    '-@all',
    '+ping',
    '+info',
    '+select',
    '+get',
    '+mget',
    '+set',
    '+del',
    '+type',
    '+hset',
    '+hgetall',
    '+pexpire',
    '+zadd',
    '+zrem',
    '+zscore',
    '+zmscore',
    '+zcard',
    '+zrangebyscore',
    '+scan',
    '+eval',
    '+evalsha',
    '+cluster|slots',
    '+cluster|nodes',
    '+cluster|info',
  ].join(' ');
}

/**
 * MariaDB, Redis and Kafka that accept only TLS (and SASL on Kafka), with certificates made by
 * openssl at start, for the tests of cachesync's TLS, SASL and ACL settings. Ports from
 * `basePort`: MariaDB +0, Redis (TLS only) +1, Kafka SASL_SSL +2, its controller +3, and a
 * plaintext listener +4 on loopback that the broker and the tests' admin use.
 */
export class SecureStack {
  readonly dir: string;
  readonly ports: {
    mariadb: number;
    redis: number;
    kafka: number;
    kafkaController: number;
    kafkaInternal: number;
  };
  readonly users: SecureUsers;

  constructor(opts: { dir: string; basePort: number; keyPatterns: readonly string[] }) {
    this.dir = resolve(opts.dir);
    const b = opts.basePort;
    this.ports = { mariadb: b, redis: b + 1, kafka: b + 2, kafkaController: b + 3, kafkaInternal: b + 4 };
    const secret = () => `${randomBytes(9).toString('base64url')}#: "x"`;
    this.users = {
      mysql: { user: 'cachesync', password: secret() },
      mysqlRoot: { user: 'cachesync_test_admin', password: secret() },
      redis: { user: 'cachesync', password: secret() },
      redisAdmin: { password: secret() },
      // The storage tool's SCRAM syntax takes no quotes inside a password.
      kafka: { user: 'cachesync', password: randomBytes(12).toString('hex') },
    };
    this.keyPatterns = opts.keyPatterns;
  }

  private readonly keyPatterns: readonly string[];

  /** Paths of the PEM files. */
  get certs(): Certificates {
    const at = (name: string) => join(this.dir, 'tls', name);
    return {
      ca: at('ca.pem'),
      serverCert: at('server.pem'),
      serverKey: at('server-key.pem'),
      clientCert: at('client.pem'),
      clientKey: at('client-key.pem'),
    };
  }

  async up(): Promise<void> {
    await this.down();
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    await this.makeCertificates();
    await Promise.all([this.startMariadb(), this.startRedis(), this.startKafka()]);
  }

  async down(): Promise<void> {
    await Promise.all(
      ['mariadb', 'redis', 'kafka'].map((s) => stopByPidFile(join(this.dir, s, 'server.pid'))),
    );
  }

  /** The Redis ACL user cachesync logs in as, in the form of a `user` config line (without `user`). */
  redisAclUser(): string {
    const { user, password } = this.users.redis;
    // The password as its sha256 (#...): no quoting of the punctuation in it.
    return `${user} on #${sha256(password)} ${redisAclRule(this.keyPatterns)}`;
  }

  /** An admin connection over TLS. */
  mysqlAdmin(): Promise<mysql.Connection> {
    return mysql.createConnection({
      host: '127.0.0.1',
      port: this.ports.mariadb,
      ...this.users.mysqlRoot,
      ssl: { ca: readFileSync(this.certs.ca, 'utf8'), rejectUnauthorized: true },
      multipleStatements: true,
    });
  }

  /** The `default` user over TLS: sees every key. */
  redisAdmin(): Redis {
    return new Redis({
      host: '127.0.0.1',
      port: this.ports.redis,
      password: this.users.redisAdmin.password,
      tls: { ca: readFileSync(this.certs.ca, 'utf8') },
    });
  }

  /** A client on the plaintext loopback listener, whose anonymous user is a super user. */
  kafkaAdmin(): Kafka {
    return new Kafka({
      clientId: 'secure-stack-admin',
      brokers: [`127.0.0.1:${this.ports.kafkaInternal}`],
      logLevel: logLevel.NOTHING,
    });
  }

  private async makeCertificates(): Promise<void> {
    const openssl = findBinary('openssl');
    const dir = join(this.dir, 'tls');
    mkdirSync(dir, { recursive: true });
    const c = this.certs;
    const ossl = (...args: string[]) => run(openssl, args, { cwd: dir });
    const key = (file: string) =>
      ossl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file);
    await key(join(dir, 'ca-key.pem'));
    await ossl(
      'req',
      '-x509',
      '-new',
      '-key',
      join(dir, 'ca-key.pem'),
      '-days',
      '2',
      '-subj',
      '/CN=cachesync test CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-out',
      c.ca,
    );
    const issue = async (name: string, cert: string, keyFile: string, ext: string) => {
      await key(keyFile);
      const csr = join(dir, `${name}.csr`);
      await ossl('req', '-new', '-key', keyFile, '-subj', `/CN=${name}`, '-out', csr);
      const extFile = join(dir, `${name}.ext`);
      writeFileSync(extFile, `${ext}\n`);
      await ossl(
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        c.ca,
        '-CAkey',
        join(dir, 'ca-key.pem'),
        '-CAcreateserial',
        '-days',
        '2',
        '-extfile',
        extFile,
        '-out',
        cert,
      );
    };
    await issue(
      'localhost',
      c.serverCert,
      c.serverKey,
      'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth',
    );
    await issue('cachesync', c.clientCert, c.clientKey, 'extendedKeyUsage=clientAuth');
  }

  private async startMariadb(): Promise<void> {
    const base = join(this.dir, 'mariadb');
    const data = join(base, 'data');
    mkdirSync(base, { recursive: true });
    const asRoot = process.getuid?.() === 0 ? ['--user=root'] : [];
    await run(findBinary('mariadb-install-db'), [
      '--no-defaults',
      `--datadir=${data}`,
      '--auth-root-authentication-method=normal',
      '--skip-test-db',
      ...asRoot,
    ]);
    const logFile = join(base, 'server.log');
    // Root over the socket first: it has no password yet and TCP will require TLS.
    const socket = { socketPath: join(base, 'mysqld.sock'), user: 'root', password: '' };
    await retryWhilePortBusy(async () => {
      const pid = spawnDaemon(
        findBinary('mariadbd'),
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
          '--innodb-buffer-pool-size=64M',
          '--innodb-log-file-size=32M',
          `--ssl-ca=${this.certs.ca}`,
          `--ssl-cert=${this.certs.serverCert}`,
          `--ssl-key=${this.certs.serverKey}`,
          `--log-error=${logFile}`,
        ],
        { logFile, pidFile: join(base, 'server.pid') },
      );
      await waitFor(
        'mariadbd (secure)',
        async () => {
          const conn = await mysql.createConnection({ ...socket, connectTimeout: 1000 });
          await conn.end();
          return true;
        },
        { timeoutMs: 60_000, pid, logFile },
      );
    });
    const conn = await mysql.createConnection(socket);
    try {
      const { mysql: cdc, mysqlRoot: root } = this.users;
      await conn.query(`CREATE USER ?@'%' IDENTIFIED BY ? REQUIRE X509`, [cdc.user, cdc.password]);
      await conn.query(`GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO ?@'%'`, [cdc.user]);
      await conn.query(`CREATE USER ?@'%' IDENTIFIED BY ?`, [root.user, root.password]);
      await conn.query(`GRANT ALL PRIVILEGES ON *.* TO ?@'%' WITH GRANT OPTION`, [root.user]);
      await conn.query('SET GLOBAL require_secure_transport = ON');
    } finally {
      await conn.end();
    }
  }

  private async startRedis(): Promise<void> {
    const base = join(this.dir, 'redis');
    mkdirSync(base, { recursive: true });
    const conf = join(base, 'redis.conf');
    const { redisAdmin } = this.users;
    writeFileSync(
      conf,
      [
        'port 0',
        `tls-port ${this.ports.redis}`,
        'bind 127.0.0.1',
        `tls-cert-file ${this.certs.serverCert}`,
        `tls-key-file ${this.certs.serverKey}`,
        `tls-ca-cert-file ${this.certs.ca}`,
        'tls-auth-clients optional',
        'save ""',
        'appendonly no',
        `dir ${base}`,
        `user default on #${sha256(redisAdmin.password)} ~* &* +@all`,
        `user ${this.redisAclUser()}`,
        '',
      ].join('\n'),
    );
    const logFile = join(base, 'server.log');
    await retryWhilePortBusy(async () => {
      const pid = spawnDaemon(findBinary('redis-server'), [conf], {
        logFile,
        pidFile: join(base, 'server.pid'),
      });
      await waitFor(
        'redis-server (TLS)',
        async () => {
          const r = this.redisAdmin();
          r.on('error', () => {});
          try {
            return (await r.ping()) === 'PONG';
          } finally {
            r.disconnect();
          }
        },
        { timeoutMs: 20_000, pid, logFile },
      );
    });
  }

  private async startKafka(): Promise<void> {
    const java = findBinary('java');
    const libs = await ensureKafkaJars(join(this.dir, '..', '..', 'cache'));
    const base = join(this.dir, 'kafka');
    const data = join(base, 'data');
    mkdirSync(base, { recursive: true });
    // Kafka reads a PEM key store holding the private key (PKCS#8) and the certificate chain.
    const keystore = join(base, 'keystore.pem');
    writeFileSync(
      keystore,
      readFileSync(this.certs.serverKey, 'utf8') + readFileSync(this.certs.serverCert, 'utf8'),
    );
    const { kafka, kafkaController, kafkaInternal } = this.ports;
    const files = writeBrokerFiles(base, libs, [
      ...singleNodeProperties({ controllerPort: kafkaController, dataDir: data, internalPartitions: 2 }),
      `listeners=SASL_SSL://127.0.0.1:${kafka},CONTROLLER://127.0.0.1:${kafkaController},INTERNAL://127.0.0.1:${kafkaInternal}`,
      `advertised.listeners=SASL_SSL://127.0.0.1:${kafka},INTERNAL://127.0.0.1:${kafkaInternal}`,
      'listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT',
      'inter.broker.listener.name=INTERNAL',
      'sasl.enabled.mechanisms=SCRAM-SHA-512',
      'listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;',
      'ssl.keystore.type=PEM',
      `ssl.keystore.location=${keystore}`,
      // Only the cachesync user's ACLs let it do anything; the loopback listeners are the admin's.
      'authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer',
      'super.users=User:ANONYMOUS',
      'allow.everyone.if.no.acl.found=false',
    ]);
    const { user, password } = this.users.kafka;
    await formatStorage(java, files, ['--add-scram', `SCRAM-SHA-512=[name=${user},password=${password}]`]);
    const logFile = join(base, 'server.log');
    await retryWhilePortBusy(async () => {
      const pid = spawnDaemon(java, brokerArgs(files, { min: '128m', max: '512m' }), {
        logFile,
        pidFile: join(base, 'server.pid'),
      });
      await waitFor(
        'kafka (SASL_SSL)',
        async () => {
          const admin = this.kafkaAdmin().admin();
          try {
            await admin.connect();
            return (await admin.describeCluster()).brokers.length > 0;
          } finally {
            await admin.disconnect();
          }
        },
        { timeoutMs: 90_000, pid, logFile },
      );
    });
  }
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
