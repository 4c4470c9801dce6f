import { describe, expect, it } from 'vitest';
import { parseCheckpoint } from '../../src/tailer/checkpoint-store.js';
import { nextEpoch, planResume, resolveStart, type ServerState } from '../../src/tailer/source-epoch.js';

const NOW = 1_790_000_000_000;
const primary: ServerState = {
  identity: 'mariadb:1',
  binlogs: [
    { name: 'binlog.000008', size: 9000 },
    { name: 'binlog.000009', size: 5000 },
  ],
  mariadbGtidPos: '0-1-900',
};
const at = { file: 'binlog.000009', pos: 4000, gtidSet: '0-1-880' };

describe('planResume', () => {
  it('resumes in the same epoch on the same server with its binlog ahead', () => {
    expect(planResume({ epoch: 7, server: 'mariadb:1' }, at, primary, NOW)).toEqual({ epoch: 7, from: at });
  });

  it('starts a new epoch and resumes by GTID on another server (failover)', () => {
    const replica: ServerState = {
      identity: 'mariadb:2',
      binlogs: [{ name: 'binlog.000003', size: 700 }],
      mariadbGtidPos: '0-1-900',
    };
    const plan = planResume({ epoch: 7, server: 'mariadb:1' }, at, replica, NOW);
    expect(plan.epoch).toBe(NOW / 1000);
    expect(plan.from).toEqual(at);
    expect(plan.newEpoch).toContain('failover');
  });

  it('cannot carry a position without GTID to another server', () => {
    const { gtidSet: _, ...noGtid } = at;
    expect(() =>
      planResume({ epoch: 7, server: 'mysql:a' }, noGtid, { ...primary, identity: 'mysql:b' }, NOW),
    ).toThrow('cachesync new-epoch --start');
  });

  it.each([
    ['a lower file index (RESET MASTER)', { binlogs: [{ name: 'binlog.000001', size: 9999 }] }],
    ['the same file, shorter', { binlogs: [{ name: 'binlog.000009', size: 300 }] }],
    ['a GTID sequence behind the checkpoint', { mariadbGtidPos: '0-1-20' }],
  ])('starts a new epoch from the oldest binlog when the binlog went backwards: %s', (_, change) => {
    const server = { ...primary, ...change };
    const plan = planResume({ epoch: 7, server: 'mariadb:1' }, at, server, NOW);
    expect(plan.epoch).toBe(NOW / 1000);
    expect(plan.from).toEqual({ file: server.binlogs[0]!.name, pos: 4 });
    expect(plan.newEpoch).toContain('went backwards');
  });

  it('leaves a purged checkpoint to the purge error (files moved forward, not back)', () => {
    const purged = { ...primary, binlogs: [{ name: 'binlog.000012', size: 100 }], mariadbGtidPos: '0-1-990' };
    expect(planResume({ epoch: 7, server: 'mariadb:1' }, at, purged, NOW)).toEqual({ epoch: 7, from: at });
  });

  it('trusts a checkpoint stored before servers were recorded', () => {
    expect(planResume({ epoch: 0 }, at, { ...primary, identity: 'mariadb:5' }, NOW)).toEqual({
      epoch: 0,
      from: at,
    });
  });

  it('moves epochs forward even when the clock is behind', () => {
    expect(nextEpoch(undefined, NOW)).toBe(NOW / 1000);
    expect(nextEpoch(NOW / 1000 + 50, NOW)).toBe(NOW / 1000 + 51);
  });
});

describe('parseCheckpoint', () => {
  it('reads a checkpoint stored before epochs as epoch 0', () => {
    expect(
      parseCheckpoint(
        '{"file":"binlog.000002","pos":120,"gtidSet":"0-1-4","commitTsMs":1,"savedAtMs":2}',
        't',
      ),
    ).toEqual({ file: 'binlog.000002', pos: 120, gtidSet: '0-1-4', commitTsMs: 1, savedAtMs: 2, epoch: 0 });
  });

  it.each([
    ['not json', 'not JSON'],
    ['{"pos":4}', 'is not a binlog file name'],
    ['{"file":"binlog.000001","pos":-1}', 'is not a position'],
    ['{"file":"binlog.000001","pos":4,"epoch":"x"}', 'is not a whole number'],
  ])('refuses %s, saying how to recover', (text, problem) => {
    expect(() => parseCheckpoint(text, 'cs.checkpoint')).toThrow(problem);
    expect(() => parseCheckpoint(text, 'cs.checkpoint')).toThrow('cachesync new-epoch');
  });
});

describe('resolveStart', () => {
  const server = {
    identity: 'mariadb:1',
    binlogs: [
      { name: 'binlog.000007', size: 900 },
      { name: 'binlog.000008', size: 300 },
    ],
  };

  it('reads "beginning" from the oldest binlog file the server still has', () => {
    expect(resolveStart({ kind: 'beginning' }, server)).toEqual({ file: 'binlog.000007', pos: 4 });
  });

  it('leaves every other start as it is', () => {
    expect(resolveStart({ kind: 'end' }, server)).toEqual({ kind: 'end' });
    expect(resolveStart({ kind: 'gtid', gtidSet: '0-1-5' }, server)).toEqual({
      kind: 'gtid',
      gtidSet: '0-1-5',
    });
    expect(resolveStart({ file: 'binlog.000008', pos: 120 }, server)).toEqual({
      file: 'binlog.000008',
      pos: 120,
    });
  });
});
