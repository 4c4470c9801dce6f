import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';

function capture() {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  return { stream, text: () => text };
}

describe('logger', () => {
  it('writes one JSON line per event, with level, time, message and context', async () => {
    const out = capture();
    const log = createLogger({ pretty: false, destination: out.stream }).child({ component: 'tailer' });
    log.info({ table: 'shop.users', partition: 3, offset: '42' }, 'applied');
    log.warn({ gtid: '0-1-7' }, 'slow');
    await new Promise((r) => setImmediate(r));
    const lines = out
      .text()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({
      level: 30,
      msg: 'applied',
      component: 'tailer',
      table: 'shop.users',
      partition: 3,
      offset: '42',
    });
    expect(lines[1]).toMatchObject({ level: 40, msg: 'slow', gtid: '0-1-7' });
    expect(typeof lines[0]?.time).toBe('number');
  });

  it('never writes passwords or connection URLs', async () => {
    const out = capture();
    const log = createLogger({ pretty: false, destination: out.stream });
    log.info({ password: 'hunter2-a' }, 'x');
    log.info({ source: { password: 'hunter2-b' } }, 'x');
    log.info(
      { config: { source: { password: 'hunter2-c' }, redis: { url: 'redis://u:hunter2-d@h:1' } } },
      'x',
    );
    log.info({ url: 'redis://u:hunter2-e@h:1' }, 'x');
    log.info({ config: { kafka: { sasl: { username: 'u', password: 'hunter2-f' } } } }, 'x');
    log.info({ redis: { tls: { key: '-----BEGIN PRIVATE KEY----- hunter2-g' } } }, 'x');
    await new Promise((r) => setImmediate(r));
    expect(out.text()).not.toMatch(/hunter2/);
    expect(out.text()).toContain('[redacted]');
  });
});
