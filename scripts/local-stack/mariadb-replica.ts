import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mysql from 'mysql2/promise';
import { CDC_USER, type StackEndpoints } from './local-stack.js';
import { findBinary, portInUse, retryWhilePortBusy, spawnDaemon, stopByPidFile, waitFor } from './process.js';

const run = promisify(execFile);

export interface MariadbReplicaOptions {
  /** Work dir of this server: data, backup, log and pid file (git-ignored). */
  dir: string;
  port: number;
  /** Its server_id: unlike the primary's (1). */
  serverId: number;
  /** The primary it replicates from (an account that may read the binlog). */
  primary: StackEndpoints['mysql'];
}

/**
 * A second MariaDB server that replicates the stack's MariaDB by GTID with `log_slave_updates`,
 * as a failover target: it can be promoted (replication stopped, written to directly), stopped,
 * backed up as files and restored from them. It replicates from the primary's current GTID
 * position on, so it holds what is written after it started.
 */
export class MariadbReplica {
  private readonly data: string;
  private readonly pidFile: string;
  private readonly logFile: string;

  constructor(private readonly opts: MariadbReplicaOptions) {
    this.data = join(opts.dir, 'data');
    this.pidFile = join(opts.dir, 'server.pid');
    this.logFile = join(opts.dir, 'server.log');
  }

  /** Root and CDC accounts on this server. */
  get endpoints(): Pick<StackEndpoints, 'mysql' | 'cdc'> {
    const at = { host: '127.0.0.1', port: this.opts.port };
    return { mysql: { ...at, user: 'root', password: '' }, cdc: { ...at, ...CDC_USER } };
  }

  /** Installs a fresh server, starts it and makes it replicate the primary from now on. */
  async create(): Promise<void> {
    await this.stop();
    rmSync(this.opts.dir, { recursive: true, force: true });
    mkdirSync(this.opts.dir, { recursive: true });
    await run(findBinary('mariadb-install-db'), [
      '--no-defaults',
      `--datadir=${this.data}`,
      '--auth-root-authentication-method=normal',
      '--skip-test-db',
      ...this.asRoot(),
    ]);
    await this.start();
    const conn = await mysql.createConnection(this.endpoints.mysql);
    const primary = await mysql.createConnection(this.opts.primary);
    try {
      // Local accounts only: kept out of this server's binlog, so its GTIDs are the primary's.
      await conn.query('SET SESSION sql_log_bin = 0');
      await conn.query(`CREATE USER IF NOT EXISTS ?@'%' IDENTIFIED BY ?`, [CDC_USER.user, CDC_USER.password]);
      await conn.query(`GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO ?@'%'`, [
        CDC_USER.user,
      ]);
      const [[pos]] = await primary.query<mysql.RowDataPacket[]>('SELECT @@GLOBAL.gtid_binlog_pos AS p');
      await conn.query('SET GLOBAL gtid_slave_pos = ?', [String(pos?.p ?? '')]);
      await conn.query(
        `CHANGE MASTER TO MASTER_HOST = ?, MASTER_PORT = ?, MASTER_USER = ?, MASTER_PASSWORD = ?, MASTER_USE_GTID = slave_pos`,
        [this.opts.primary.host, this.opts.primary.port, this.opts.primary.user, this.opts.primary.password],
      );
      await conn.query('START SLAVE');
    } finally {
      await conn.end();
      await primary.end();
    }
  }

  async start(): Promise<void> {
    if (await portInUse(this.opts.port)) {
      throw new Error(`port ${this.opts.port} for the MariaDB replica is taken`);
    }
    await retryWhilePortBusy(() => this.launch());
  }

  private async launch(): Promise<void> {
    const pid = spawnDaemon(
      findBinary('mariadbd'),
      [
        '--no-defaults',
        ...this.asRoot(),
        `--datadir=${this.data}`,
        `--socket=${join(this.opts.dir, 'mysqld.sock')}`,
        `--port=${this.opts.port}`,
        '--bind-address=127.0.0.1',
        '--skip-name-resolve',
        `--server-id=${this.opts.serverId}`,
        `--log-bin=${join(this.data, 'binlog')}`,
        '--log-slave-updates=ON',
        '--binlog-format=ROW',
        '--binlog-row-image=FULL',
        '--binlog-row-metadata=FULL',
        '--innodb-buffer-pool-size=64M',
        '--innodb-log-file-size=48M',
        '--character-set-server=utf8mb4',
        '--collation-server=utf8mb4_unicode_ci',
        `--log-error=${this.logFile}`,
      ],
      { logFile: this.logFile, pidFile: this.pidFile },
    );
    const ep = this.endpoints.mysql;
    await waitFor(
      'mariadbd (replica)',
      async () => {
        const conn = await mysql.createConnection({ ...ep, connectTimeout: 1000 });
        await conn.end();
        return true;
      },
      { timeoutMs: 60_000, pid, logFile: this.logFile },
    );
  }

  async stop(): Promise<void> {
    if (existsSync(this.pidFile)) await stopByPidFile(this.pidFile);
  }

  /** Waits until it has applied everything the primary had written when this was called. */
  async catchUp(timeoutSeconds = 60): Promise<void> {
    const primary = await mysql.createConnection(this.opts.primary);
    const conn = await mysql.createConnection(this.endpoints.mysql);
    try {
      const [[pos]] = await primary.query<mysql.RowDataPacket[]>('SELECT @@GLOBAL.gtid_binlog_pos AS p');
      const [[r]] = await conn.query<mysql.RowDataPacket[]>('SELECT MASTER_GTID_WAIT(?, ?) AS r', [
        String(pos?.p ?? ''),
        timeoutSeconds,
      ]);
      if (Number(r?.r) !== 0) throw new Error(`the replica did not catch up in ${timeoutSeconds} s`);
    } finally {
      await primary.end();
      await conn.end();
    }
  }

  /** Failover: stops replicating, so the application writes here from now on. */
  async promote(): Promise<void> {
    const conn = await mysql.createConnection(this.endpoints.mysql);
    try {
      await conn.query('STOP SLAVE');
      await conn.query('RESET SLAVE ALL');
    } finally {
      await conn.end();
    }
  }

  /** A file backup: stops the server, copies its data dir, starts it again. */
  async backup(): Promise<void> {
    await this.stop();
    rmSync(join(this.opts.dir, 'backup'), { recursive: true, force: true });
    cpSync(this.data, join(this.opts.dir, 'backup'), { recursive: true });
    await this.start();
  }

  /** Restores the last backup: the server comes back as it was then, binlog included. */
  async restore(): Promise<void> {
    await this.stop();
    rmSync(this.data, { recursive: true, force: true });
    cpSync(join(this.opts.dir, 'backup'), this.data, { recursive: true });
    await this.start();
  }

  /** Stops the server and removes its files. */
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.opts.dir, { recursive: true, force: true });
  }

  private asRoot(): string[] {
    return process.getuid?.() === 0 ? ['--user=root'] : [];
  }
}
