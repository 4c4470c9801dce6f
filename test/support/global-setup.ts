import type { TestProject } from 'vitest/node';
import { SERVERS, type ServerName, type StackEndpoints } from '../../scripts/local-stack/local-stack.js';
import { externalServers, testStack } from './test-env.js';

declare module 'vitest' {
  export interface ProvidedContext {
    endpoints: StackEndpoints;
    /** Servers this run started itself, which fault tests may stop, kill and restart. */
    localServers: ServerName[];
  }
}

/** Starts a fresh local stack for the servers the environment does not name, and stops it after. */
export default async function setup(project: TestProject) {
  const external = externalServers();
  const local = SERVERS.filter((s) => {
    if (s === 'mariadb') return !external.mysql;
    if (s === 'redis') return !external.redisUrl;
    return !external.kafkaBrokers;
  });
  const stack = testStack((msg) => console.log(`[stack] ${msg}`));
  const started = local.length > 0 ? await stack.up({ fresh: true, only: local }) : stack.endpoints;
  const endpoints: StackEndpoints = {
    mysql: external.mysql ?? started.mysql,
    cdc: external.cdc ?? started.cdc,
    redisUrl: external.redisUrl ?? started.redisUrl,
    kafkaBrokers: external.kafkaBrokers ?? started.kafkaBrokers,
  };
  project.provide('endpoints', endpoints);
  project.provide('localServers', local);
  return async () => {
    if (process.env.CACHESYNC_KEEP_STACK) return;
    await stack.down(local);
  };
}
