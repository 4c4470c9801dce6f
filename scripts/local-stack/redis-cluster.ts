import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { findBinary, retryWhilePortBusy, spawnDaemon, stopByPidFile, waitFor } from './process.js';

const SLOTS = 16_384;

/** A cluster that speaks only TLS (clients and cluster bus), with ACL users. */
export interface ClusterTls {
  ca: string;
  cert: string;
  key: string;
  /** Password of the `default` user, which this class uses to build the cluster. */
  adminPassword: string;
  /** More ACL users, as `user` config lines without the word `user`. */
  users?: string[];
}

/**
 * A real Redis Cluster of `ports.length` masters (no replicas) on loopback, from the machine's
 * redis-server: for proving that versions and their guards stay in one slot. With `tls`, every
 * port is a TLS port and the nodes talk TLS to each other.
 */
export class LocalRedisCluster {
  constructor(
    readonly dir: string,
    readonly ports: readonly number[],
    readonly tls?: ClusterTls,
  ) {}

  get seedUrl(): string {
    return `redis://127.0.0.1:${this.ports[0]}`;
  }

  async start(): Promise<void> {
    const bin = findBinary('redis-server');
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
    for (const port of this.ports) {
      const dir = join(this.dir, String(port));
      mkdirSync(dir, { recursive: true });
      await retryWhilePortBusy(() => this.startNode(bin, port, dir));
    }
    // Split the slots evenly, then introduce the nodes to each other.
    const per = Math.ceil(SLOTS / this.ports.length);
    for (const [i, port] of this.ports.entries()) {
      await this.node(port, (r) =>
        r.call('CLUSTER', 'ADDSLOTSRANGE', String(i * per), String(Math.min(SLOTS, (i + 1) * per) - 1)),
      );
      if (i > 0) await this.node(port, (r) => r.call('CLUSTER', 'MEET', '127.0.0.1', String(this.ports[0])));
    }
    for (const port of this.ports) {
      await waitFor(
        `cluster state on ${port}`,
        async () =>
          String(await this.node(port, (r) => r.call('CLUSTER', 'INFO'))).includes('cluster_state:ok'),
        { timeoutMs: 30_000 },
      );
    }
    // Every node must also know every other node's slots before clients connect.
    await sleep(500);
  }

  private async startNode(bin: string, port: number, dir: string): Promise<void> {
    const pid = spawnDaemon(
      bin,
      [
        ...(this.tls ? this.tlsArgs(this.tls, port) : ['--port', String(port)]),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(dir, 'nodes.conf'),
        '--cluster-node-timeout',
        '3000',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
      ],
      { logFile: join(dir, 'server.log'), pidFile: join(dir, 'server.pid') },
    );
    await waitFor(`redis-server (cluster node ${port})`, () => this.ping(port), {
      timeoutMs: 20_000,
      pid,
      logFile: join(dir, 'server.log'),
    });
  }

  async stop(): Promise<void> {
    await Promise.all(this.ports.map((port) => stopByPidFile(join(this.dir, String(port), 'server.pid'))));
  }

  private tlsArgs(tls: ClusterTls, port: number): string[] {
    const hash = (text: string) => createHash('sha256').update(text).digest('hex');
    return [
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--tls-cluster',
      'yes',
      '--tls-replication',
      'yes',
      '--tls-cert-file',
      tls.cert,
      '--tls-key-file',
      tls.key,
      '--tls-ca-cert-file',
      tls.ca,
      '--tls-auth-clients',
      'optional',
      '--user',
      'default',
      'on',
      `#${hash(tls.adminPassword)}`,
      '~*',
      '&*',
      '+@all',
      ...(tls.users ?? []).flatMap((line) => ['--user', ...line.split(' ')]),
    ];
  }

  private async ping(port: number): Promise<boolean> {
    return (await this.node(port, (r) => r.ping())) === 'PONG';
  }

  private async node<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
    const r = new Redis({
      port,
      host: '127.0.0.1',
      ...(this.tls
        ? { password: this.tls.adminPassword, tls: { ca: readFileSync(this.tls.ca, 'utf8') } }
        : {}),
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    r.on('error', () => {});
    try {
      await r.connect();
      return await fn(r);
    } finally {
      r.disconnect();
    }
  }
}
