import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, finish, Pipeline } from '../support/pipeline.js';
import { uniqueName } from '../support/names.js';

describe('cachesync command line against real servers', () => {
  let pipeline: Pipeline;

  beforeAll(async () => {
    pipeline = await Pipeline.create({
      tables: [`CREATE TABLE {db}.users (id BIGINT PRIMARY KEY, email VARCHAR(100), name VARCHAR(100))`],
      mappings: `
  - table: {db}.users
    keys:
      - key: "{p}user:{id}"
        action: refresh`,
    });
  });

  afterAll(async () => {
    await pipeline?.cleanup();
  });

  /** Writes a variant of the test's config with the mappings section replaced. */
  function configWith(mappings: string): string {
    const original = readConfig();
    const file = pipeline.configFile.replace(/\.yaml$/, `-${uniqueName('v')}.yaml`);
    writeFileSync(
      file,
      original.replace(/mappings:[\s\S]*$/, `mappings:\n${mappings.replaceAll('{db}', pipeline.db)}`),
    );
    return file;
  }

  function readConfig(): string {
    return readFileSync(pipeline.configFile, 'utf8');
  }

  it('check passes on a well-set server and exits 0', async () => {
    const { code, out } = await finish(pipeline.spawn(['check']));
    expect(out).toContain('ok   binlog_format = ROW');
    expect(out).toContain('ok   binlog_row_metadata = FULL');
    expect(out).toContain('ok   grant REPLICATION SLAVE');
    expect(out).toContain(`ok   table ${pipeline.db}.users and its mapped columns`);
    expect(out).toContain('all checks passed');
    expect(code).toBe(0);
  });

  it('check catches binlog_format=STATEMENT and exits 1', async () => {
    await pipeline.sql.query(`SET GLOBAL binlog_format = 'STATEMENT'`);
    try {
      const { code, out } = await finish(pipeline.spawn(['check']));
      expect(out).toMatch(/FAIL binlog_format = ROW\n\s+it is STATEMENT/);
      expect(code).toBe(1);
    } finally {
      await pipeline.sql.query(`SET GLOBAL binlog_format = 'ROW'`);
    }
  });

  it('check catches a user without replication privileges', async () => {
    const user = uniqueName('noRepl').slice(0, 30);
    await pipeline.sql.query(`CREATE USER '${user}'@'%' IDENTIFIED BY 'pw'`);
    await pipeline.sql.query(`GRANT SELECT ON *.* TO '${user}'@'%'`);
    try {
      const file = configWith(
        `  - table: {db}.users\n    keys:\n      - key: "x:{id}"\n        action: invalidate\n`,
      );
      writeFileSync(
        file,
        readFileSync(file, 'utf8')
          .replace(/user: .*/, `user: ${user}`)
          .replace(/password: .*/, 'password: pw'),
      );
      const { code, out } = await finish(pipeline.spawn(['check', '-c', file]));
      expect(out).toContain('FAIL grant REPLICATION SLAVE');
      expect(out).toContain('FAIL grant REPLICATION CLIENT');
      expect(code).toBe(1);
    } finally {
      await pipeline.sql.query(`DROP USER '${user}'@'%'`);
    }
  });

  it('run refuses a mapping of a missing table or column with exit 2, naming the path', async () => {
    const file = configWith(
      [
        '  - table: {db}.users',
        '    keys:',
        '      - key: "x:{nope}"',
        '        action: invalidate',
        '  - table: {db}.missing',
        '    keys:',
        '      - key: "y:{id}"',
        '        action: invalidate',
        '',
      ].join('\n'),
    );
    const { code, err, out } = await finish(pipeline.spawn(['run', '-c', file]));
    const text = err + out;
    expect(text).toContain('mappings[0].keys[0].key: {nope}');
    expect(text).toContain(`mappings[1].table ${pipeline.db}.missing exists`);
    expect(code).toBe(2);
  });

  it('run refuses an unknown key and a bad duration with exit 2, naming each path', async () => {
    const file = configWith(
      [
        '  - table: {db}.users',
        '    keys:',
        '      - key: "x:{id}"',
        '        action: invalidate',
        '        delayedRedelete: 5 seconds',
        '        tll: 1h',
        '',
      ].join('\n'),
    );
    const { code, err } = await finish(pipeline.spawn(['run', '-c', file]));
    expect(err).toMatch(/mappings\[0\]\.keys\[0\]\.delayedRedelete: .*5 seconds/);
    expect(err).toMatch(/mappings\[0\]\.keys\[0\]\.tll: unknown key \(did you mean ttl\?\)/);
    expect(code).toBe(2);
  });

  it('run streams changes, and SIGTERM drains and exits 0', async () => {
    const child = pipeline.spawn(['run']);
    const done = finish(child, 90_000);
    // Writes made once it is streaming must land.
    let n = 0;
    await eventually(
      async () => {
        await pipeline.sql.query(`REPLACE INTO ${pipeline.db}.users VALUES (1, 'a@x', 'A${n++}')`);
        return pipeline.redis.exists(`${pipeline.p}user:1`);
      },
      (n) => n === 1,
      60_000,
    ).catch(async (err: Error) => {
      child.kill('SIGTERM');
      const { out, err: stderr } = await done;
      throw new Error(`${err.message}\n${out}\n${stderr}`);
    });
    const signalledAt = Date.now();
    child.kill('SIGTERM');
    const { code } = await done;
    expect(code).toBe(0);
    expect(Date.now() - signalledAt).toBeLessThan(30_000);
  });
});
