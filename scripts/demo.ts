/**
 * The demo: starts real MariaDB, Kafka and Redis on loopback (the local stack), creates the `shop`
 * schema, runs cachesync with config/cachesync.yaml, makes a few writes and shows the keys in Redis
 * change. `npm run demo -- --keep` leaves everything running for a look around (Ctrl-C stops it).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import { CacheAside } from '../src/client/index.js';
import { loadConfig } from '../src/config/load.js';
import { createLogger } from '../src/observability/logger.js';
import { Runtime } from '../src/runtime.js';
import { CDC_USER, REPO_ROOT } from './local-stack/local-stack.js';
import { DEMO_BASE_PORT, demoStack } from './stack.js';

const keep = process.argv.includes('--keep');
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s: string) => console.log(`\n${bold(`==> ${s}`)}`);

async function main(): Promise<void> {
  const stack = demoStack();
  say(
    `starting MariaDB, Redis and Kafka on 127.0.0.1:${DEMO_BASE_PORT}-${DEMO_BASE_PORT + 3} (fresh data in .stack/demo)`,
  );
  // A demo starts from nothing: fresh data dirs, so an earlier run's checkpoint or keys cannot interfere.
  const ep = await stack.up({ fresh: true });
  const sql = await mysql.createConnection({ ...ep.mysql, multipleStatements: true });
  const redis = new Redis(ep.redisUrl);
  let runtime: Runtime | undefined;
  try {
    await sql.query(`
      CREATE DATABASE IF NOT EXISTS shop;
      CREATE TABLE IF NOT EXISTS shop.users (id BIGINT PRIMARY KEY, email VARCHAR(255), name VARCHAR(255),
        balance DECIMAL(12,2), created_at DATETIME(6));
      CREATE TABLE IF NOT EXISTS shop.orders (id BIGINT PRIMARY KEY, user_id BIGINT, status VARCHAR(32),
        total DECIMAL(12,2));
      DELETE FROM shop.orders; DELETE FROM shop.users;`);

    const configFile = join(REPO_ROOT, 'config', 'cachesync.yaml');
    say(`running cachesync (tailer + consumers) with ${configFile}`);
    const config = await loadConfig(configFile, {
      env: { ...process.env, MYSQL_PASSWORD: process.env.MYSQL_PASSWORD ?? CDC_USER.password },
    });
    const logger = createLogger({ level: process.env.LOG_LEVEL ?? 'warn' });
    runtime = await Runtime.start(config, { role: 'all', logger });
    while (!runtime.health.ready()) await sleep(100);
    console.log(`    ready: metrics on http://127.0.0.1:${runtime.metricsPort}/metrics, /healthz, /readyz`);

    const show = async (...keys: string[]) => {
      for (const key of keys) {
        const type = await redis.type(key);
        const value =
          type === 'hash' ? await redis.hgetall(key) : type === 'string' ? await redis.get(key) : null;
        const ttl = await redis.pttl(key);
        console.log(
          `    ${key.padEnd(22)} ${value === null ? '(absent)' : JSON.stringify(value)}${ttl > 0 ? `  ttl ${Math.round(ttl / 1000)}s` : ''}`,
        );
      }
    };
    const write = async (statement: string, settle: () => Promise<boolean>) => {
      console.log(`    mysql> ${statement}`);
      await sql.query(statement);
      for (let i = 0; i < 200 && !(await settle()); i++) await sleep(25);
    };

    say('an app caches a user by email (cache-aside); then the user is inserted');
    await redis.set('user:email:ann@example.com', '{"id":1,"stale":true}');
    await write(
      `INSERT INTO shop.users VALUES (1, 'ann@example.com', 'Ann', 10.50, NOW(6))`,
      async () => (await redis.exists('user:1')) === 1,
    );
    console.log('    refresh wrote user:1 (json, with TTL); invalidate deleted the email key:');
    await show('user:1', 'user:email:ann@example.com');

    say('an update of the email: user:1 is rewritten, the old and the new email keys are deleted');
    await redis.set('user:email:ann@new.example', 'cached-by-app');
    await write(`UPDATE shop.users SET email = 'ann@new.example', balance = 99.99 WHERE id = 1`, async () =>
      ((await redis.get('user:1')) ?? '').includes('99.99'),
    );
    await show('user:1', 'user:email:ann@example.com', 'user:email:ann@new.example');

    say("orders: refresh as a hash; the user's cached order list is deleted, and deleted again 500 ms later");
    await redis.set('user:1:orders', '[]');
    await write(
      `INSERT INTO shop.orders VALUES (7, 1, 'new', 25.00)`,
      async () => (await redis.exists('order:7')) === 1,
    );
    await show('order:7', 'user:1:orders');
    console.log('    a slow reader writes a stale list back right after the delete (the stale-set race)...');
    await redis.set('user:1:orders', '[stale]');
    await show('user:1:orders');
    await sleep(700);
    console.log('    ...and the delayed second delete removed it:');
    await show('user:1:orders');

    say('an update of a column outside onlyWhenChanged is ignored; a status change is applied');
    await write(
      `UPDATE shop.orders SET status = 'paid' WHERE id = 7`,
      async () => (await redis.hget('order:7', 'status')) === 'paid',
    );
    await show('order:7');

    say('delete: the keys go');
    await write(`DELETE FROM shop.users WHERE id = 1`, async () => (await redis.exists('user:1')) === 0);
    await show('user:1');

    say('a slow cache-aside reader and an update at the same time (no delayedRedelete on this key)');
    await write(
      `INSERT INTO shop.users VALUES (2, 'bea@example.com', 'Bea', 5.00, NOW(6))`,
      async () => (await redis.exists('user:2')) === 1,
    );
    const emailKey = 'user:email:bea@example.com';
    const selectBea = async () => {
      const [rows] = await sql.query<mysql.RowDataPacket[]>(
        `SELECT id, name FROM shop.users WHERE email = 'bea@example.com'`,
      );
      return rows[0] ? JSON.stringify(rows[0]) : null;
    };
    const renamed = (name: string) => async () => ((await redis.get('user:2')) ?? '').includes(name);
    console.log('    plain pattern: GET (miss), SELECT, then the reader stalls while the row changes...');
    const loaded = await selectBea();
    await write(`UPDATE shop.users SET name = 'Beatrice' WHERE id = 2`, renamed('Beatrice'));
    await redis.set(emailKey, loaded ?? '');
    console.log('    ...and its SET lands after cachesync deleted the key: the old row stays, with no TTL');
    await show(emailKey);
    await redis.del(emailKey);
    console.log("    CacheAside: the same stall, but its write is guarded by the key's version guard");
    const cache = new CacheAside(redis);
    cache.on('writeSkipped', (key) =>
      console.log(`    (writeSkipped: a change to ${key} was applied during the load)`),
    );
    const returned = await cache.get(emailKey, async () => {
      const value = await selectBea();
      await write(`UPDATE shop.users SET name = 'Bee' WHERE id = 2`, renamed('Bee'));
      return value;
    });
    console.log(`    get returned what it loaded, ${returned ?? 'null'}, and cached nothing:`);
    await show(emailKey);
    console.log(
      `    the next get loads the current row and caches it: ${(await cache.get(emailKey, selectBea)) ?? 'null'}`,
    );
    await show(emailKey);

    say('what the metrics say');
    const text = await runtime.metrics.registry.metrics();
    for (const line of text.split('\n')) {
      if (
        /^cachesync_(binlog_rows_read_total|changes_applied_total|cache_operations_total|redeletes_total)/.test(
          line,
        )
      ) {
        console.log(`    ${line}`);
      }
    }
    console.log(
      `\n    change events are on the Kafka topic ${config.kafka.topic} at ${ep.kafkaBrokers.join(',')}.`,
    );
    console.log('    server logs: .stack/demo/<server>/server.log');

    if (keep) {
      say(
        `still running: try writes with  mariadb -h127.0.0.1 -P${ep.mysql.port} -uroot shop  and  redis-cli -p ${ep.redisUrl.split(':').pop()}`,
      );
      console.log('    Ctrl-C stops cachesync; `npm run stack -- down` stops the servers.');
      await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
    }
  } finally {
    await runtime?.stop();
    await sql.end();
    redis.disconnect();
    if (!keep) {
      say('stopping the servers (npm run demo -- --keep leaves them running)');
      await stack.down();
    }
  }
  say('done');
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
