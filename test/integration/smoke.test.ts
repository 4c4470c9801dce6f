import ZongJi, { type WriteRowsEvent } from '@vlasky/zongji';
import { Redis } from 'ioredis';
import { Kafka, logLevel, type EachMessagePayload } from 'kafkajs';
import mysql from 'mysql2/promise';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { uniqueName } from '../support/names.js';

const endpoints = inject('endpoints');

describe('the stack is made of real servers', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('MariaDB writes an inserted row to the binlog, and zongji reads it as a row event', async () => {
    const db = uniqueName('smoke');
    const admin = await mysql.createConnection(endpoints.mysql);
    cleanups.push(() => admin.end());
    await admin.query(`CREATE DATABASE ${db}`);
    cleanups.push(() => admin.query(`DROP DATABASE ${db}`));
    await admin.query(`CREATE TABLE ${db}.t (id INT PRIMARY KEY, name VARCHAR(20))`);

    const [vars] = await admin.query<mysql.RowDataPacket[]>(
      'SELECT @@log_bin AS logBin, @@binlog_format AS fmt, @@binlog_row_metadata AS meta',
    );
    expect(vars[0]).toMatchObject({ logBin: 1, fmt: 'ROW', meta: 'FULL' });

    const zongji = new ZongJi({ ...endpoints.cdc, dateStrings: true });
    const rows = new Promise<WriteRowsEvent>((resolve, reject) => {
      zongji.on('error', reject);
      zongji.on('binlog', (evt: { getEventName(): string }) => {
        if (evt.getEventName() === 'writerows') resolve(evt as WriteRowsEvent);
      });
    });
    const ready = new Promise<void>((resolve) => zongji.once('ready', () => resolve()));
    zongji.start({
      serverId: 9001,
      startAtEnd: true,
      includeEvents: ['tablemap', 'writerows'],
      includeSchema: { [db]: true },
    });
    cleanups.push(async () => {
      const stopped = new Promise((resolve) => zongji.once('stopped', resolve));
      zongji.stop();
      await stopped;
    });
    await ready;
    await admin.query(`INSERT INTO ${db}.t VALUES (1, 'héllo')`);
    const event = await rows;
    expect(event.rows).toEqual([{ id: 1, name: 'héllo' }]);
    expect(event.gtid).toMatch(/^\d+-\d+-\d+$/);
  });

  it('Kafka takes messages from an idempotent producer and hands them to a consumer group', async () => {
    const topic = uniqueName('smoke');
    const kafka = new Kafka({ clientId: 'smoke', brokers: endpoints.kafkaBrokers, logLevel: logLevel.WARN });
    const admin = kafka.admin();
    await admin.connect();
    cleanups.push(() => admin.disconnect());
    await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
    cleanups.push(() => admin.deleteTopics({ topics: [topic] }));

    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    cleanups.push(() => producer.disconnect());
    const sent = Array.from({ length: 10 }, (_, i) => ({ key: `k${i % 3}`, value: `v${i}` }));
    const acks = await producer.send({ topic, messages: sent });
    expect(acks.every((a) => a.errorCode === 0)).toBe(true);

    const consumer = kafka.consumer({ groupId: uniqueName('smoke-group') });
    await consumer.connect();
    cleanups.push(() => consumer.disconnect());
    await consumer.subscribe({ topic, fromBeginning: true });
    const received: { key: string; value: string }[] = [];
    const all = new Promise<void>((resolve) => {
      void consumer.run({
        eachMessage: ({ message }: EachMessagePayload) => {
          received.push({ key: message.key!.toString(), value: message.value!.toString() });
          if (received.length === sent.length) resolve();
          return Promise.resolve();
        },
      });
    });
    await all;
    expect(received.map((m) => m.value).sort()).toEqual(sent.map((m) => m.value).sort());
    // One key's messages keep their order (they share a partition).
    expect(received.filter((m) => m.key === 'k0').map((m) => m.value)).toEqual(['v0', 'v3', 'v6', 'v9']);
  });

  it('Redis stores and returns a key', async () => {
    const redis = new Redis(endpoints.redisUrl);
    cleanups.push(() => redis.quit());
    const key = uniqueName('smoke');
    await redis.set(key, 'value', 'EX', 60);
    expect(await redis.get(key)).toBe('value');
    expect(await redis.ttl(key)).toBeGreaterThan(0);
    await redis.del(key);
  });
});
