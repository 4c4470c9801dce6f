import { join } from 'node:path';
import { LocalStack, REPO_ROOT, type StackEndpoints } from '../../scripts/local-stack/local-stack.js';

/** Ports of the test stack: its own, apart from the demo's, so both can run at once. */
export const TEST_BASE_PORT = Number(process.env.CACHESYNC_TEST_BASE_PORT ?? 24300);

export function testStack(log?: (msg: string) => void): LocalStack {
  // The dir is per port, so two test runs on different ports do not share data.
  const dir = join(REPO_ROOT, '.stack', TEST_BASE_PORT === 24300 ? 'test' : `test-${TEST_BASE_PORT}`);
  return new LocalStack({ dir, basePort: TEST_BASE_PORT, log });
}

/**
 * Servers named by the environment are used as they are; the rest come from the local stack.
 *   CACHESYNC_TEST_MYSQL_URL     mysql://root:pw@host:3306  (an admin that can create databases)
 *   CACHESYNC_TEST_CDC_URL       mysql://cachesync:pw@host:3306  (default: the admin)
 *   CACHESYNC_TEST_REDIS_URL     redis://host:6379
 *   CACHESYNC_TEST_KAFKA_BROKERS host:9092[,host:9093]
 */
export interface ExternalServers {
  mysql?: StackEndpoints['mysql'];
  cdc?: StackEndpoints['cdc'];
  redisUrl?: string;
  kafkaBrokers?: string[];
}

export function externalServers(env: NodeJS.ProcessEnv = process.env): ExternalServers {
  const parseMysql = (url: string) => {
    const u = new URL(url);
    return {
      host: u.hostname,
      port: Number(u.port || 3306),
      user: decodeURIComponent(u.username),
      password: decodeURIComponent(u.password),
    };
  };
  const mysql = env.CACHESYNC_TEST_MYSQL_URL ? parseMysql(env.CACHESYNC_TEST_MYSQL_URL) : undefined;
  return {
    mysql,
    cdc: env.CACHESYNC_TEST_CDC_URL ? parseMysql(env.CACHESYNC_TEST_CDC_URL) : mysql,
    redisUrl: env.CACHESYNC_TEST_REDIS_URL,
    kafkaBrokers: env.CACHESYNC_TEST_KAFKA_BROKERS?.split(',').map((b) => b.trim()),
  };
}
