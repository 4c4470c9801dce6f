import { describe, expect, it } from 'vitest';
import { classifyRedisError } from '../../src/consumer/redis-applier.js';
import {
  ConfigError,
  errorKind,
  FatalError,
  invariant,
  MessageError,
  ProgrammerError,
  UnavailableError,
} from '../../src/core/errors.js';
import { pause, retry } from '../../src/core/retry.js';
import { classifyKafkaError, isTooLarge, needsNewProducer } from '../../src/kafka/kafka-errors.js';
import { classifyMysqlError } from '../../src/tailer/mysql-errors.js';

const reply = (message: string) => Object.assign(new Error(message), { name: 'ReplyError' });

/** A kafkajs protocol error as kafkajs builds it, optionally wrapped in its retries-exceeded error. */
function kafkaError(type: string, retriable: boolean, wrapped = false): Error {
  const inner = Object.assign(new Error(`broker said ${type}`), {
    name: 'KafkaJSProtocolError',
    type,
    retriable,
  });
  if (!wrapped) return inner;
  return Object.assign(new Error(inner.message), {
    name: 'KafkaJSNumberOfRetriesExceeded',
    retriable: false,
    cause: inner,
  });
}

describe('the error taxonomy', () => {
  it('sorts every failure into one of four kinds', () => {
    expect(errorKind(new TypeError('x is undefined'))).toBe('programmer');
    expect(errorKind(new RangeError('bad length'))).toBe('programmer');
    expect(errorKind(new ProgrammerError('broken'))).toBe('programmer');
    expect(() => invariant(false, 'never')).toThrow(ProgrammerError);
    expect(errorKind(new MessageError('bad key'))).toBe('message');
    expect(errorKind(new UnavailableError('down'))).toBe('outage');
    expect(errorKind(new FatalError('bad password'))).toBe('fatal');
    expect(errorKind(new ConfigError('bad config'))).toBe('fatal');
    // Unknown I/O failures wait: waiting never loses a change, dead-lettering might.
    expect(errorKind(new Error('socket hang up'))).toBe('outage');
  });
});

describe('classifyRedisError', () => {
  it("treats Redis' own conditions as outages, also inside a script error", () => {
    for (const text of [
      'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk',
      "NOPERM User cachesync has no permissions to run the 'evalsha' command",
      'ERR max number of clients reached',
      'NOAUTH Authentication required.',
      'WRONGPASS invalid username-password pair or user is disabled.',
      "ERR Error running script (call to f_1): @user_script:7: @user_script: 7: -OOM command not allowed when used memory > 'maxmemory'.",
      "OOM command not allowed when used memory > 'maxmemory'. script: abc, on @user_script:7.",
      'LOADING Redis is loading the dataset in memory',
    ]) {
      expect(classifyRedisError(reply(text)), text).toBeInstanceOf(UnavailableError);
    }
    expect(classifyRedisError(new Error('Command timed out'))).toBeInstanceOf(UnavailableError);
  });

  it('blames the message for replies about the command', () => {
    for (const text of [
      'WRONGTYPE Operation against a key holding the wrong kind of value',
      "CROSSSLOT Keys in request don't hash to the same slot",
      'ERR string exceeds maximum allowed size (proto-max-bulk-len)',
    ]) {
      expect(classifyRedisError(reply(text)), text).toBeInstanceOf(MessageError);
    }
  });

  it('leaves a bug a bug', () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'key')");
    expect(classifyRedisError(bug)).toBe(bug);
  });
});

describe('classifyKafkaError', () => {
  it('treats leader elections, loading coordinators and unknown topics as outages, wrapped or not', () => {
    for (const type of [
      'NOT_LEADER_FOR_PARTITION',
      'LEADER_NOT_AVAILABLE',
      'COORDINATOR_LOAD_IN_PROGRESS',
      'UNKNOWN_TOPIC_OR_PARTITION',
    ]) {
      expect(classifyKafkaError(kafkaError(type, true)), type).toBeInstanceOf(UnavailableError);
      expect(classifyKafkaError(kafkaError(type, true, true)), type).toBeInstanceOf(UnavailableError);
    }
    expect(
      classifyKafkaError(Object.assign(new Error('Connection error'), { name: 'KafkaJSConnectionError' })),
    ).toBeInstanceOf(UnavailableError);
  });

  it('honours what retrying cannot fix', () => {
    expect(classifyKafkaError(kafkaError('TOPIC_AUTHORIZATION_FAILED', false))).toBeInstanceOf(FatalError);
    expect(classifyKafkaError(kafkaError('SASL_AUTHENTICATION_FAILED', false, true))).toBeInstanceOf(
      FatalError,
    );
    const tooLarge = kafkaError('MESSAGE_TOO_LARGE', false);
    expect(classifyKafkaError(tooLarge)).toBeInstanceOf(MessageError);
    expect(isTooLarge(kafkaError('RECORD_LIST_TOO_LARGE', false, true))).toBe(true);
    expect(needsNewProducer(kafkaError('OUT_OF_ORDER_SEQUENCE_NUMBER', false, true))).toBe(true);
    expect(needsNewProducer(kafkaError('NOT_LEADER_FOR_PARTITION', true))).toBe(false);
  });
});

describe('classifyMysqlError', () => {
  it('stops on bad credentials and missing privileges, naming the fix; waits on the rest', () => {
    const denied = Object.assign(new Error("Access denied for user 'cachesync'"), {
      errno: 1045,
      sqlState: '28000',
    });
    const fatal = classifyMysqlError(denied, 'MySQL');
    expect(fatal).toBeInstanceOf(FatalError);
    expect(fatal.message).toContain('source.password');
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:3306'), { code: 'ECONNREFUSED' });
    expect(classifyMysqlError(refused, 'MySQL')).toBeInstanceOf(UnavailableError);
  });
});

describe('retry', () => {
  it('retries outages, never a bug, a fatal error or a message error', async () => {
    const policy = { initialMs: 1, maxMs: 1 };
    let calls = 0;
    await expect(
      retry(() => {
        calls++;
        return calls < 3 ? Promise.reject(new UnavailableError('down')) : Promise.resolve('ok');
      }, policy),
    ).resolves.toBe('ok');
    for (const err of [new TypeError('bug'), new FatalError('password'), new MessageError('bad')]) {
      let n = 0;
      await expect(
        retry(() => {
          n++;
          return Promise.reject(err);
        }, policy),
      ).rejects.toBe(err);
      expect(n).toBe(1);
    }
  });

  it('stops in the middle of a backoff when aborted', async () => {
    const stop = new AbortController();
    const started = Date.now();
    const failing = retry(
      () => Promise.reject(new UnavailableError('down')),
      { initialMs: 60_000, maxMs: 60_000 },
      {
        signal: stop.signal,
      },
    );
    setTimeout(() => stop.abort(), 50);
    await expect(failing).rejects.toBeInstanceOf(UnavailableError);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await pause(10_000, stop.signal)).toBe(false);
  });
});
