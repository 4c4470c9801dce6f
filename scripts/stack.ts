/**
 * Manages the local stack of real servers (MariaDB, Redis, Kafka) used by the demo.
 *
 *   npm run stack -- up|down|status
 *   npm run stack -- start|stop|kill|restart|freeze|thaw <mariadb|redis|kafka>
 */
import { join } from 'node:path';
import { LocalStack, REPO_ROOT, SERVERS, type ServerName } from './local-stack/local-stack.js';

export const DEMO_BASE_PORT = Number(process.env.CACHESYNC_STACK_BASE_PORT ?? 24400);

export function demoStack(): LocalStack {
  return new LocalStack({
    dir: join(REPO_ROOT, '.stack', 'demo'),
    basePort: DEMO_BASE_PORT,
    log: (msg) => console.log(`[stack] ${msg}`),
  });
}

async function main(argv: string[]): Promise<number> {
  const [cmd, server] = argv;
  const stack = demoStack();
  const one = (): ServerName => {
    if (!SERVERS.includes(server as ServerName)) {
      throw new Error(`name a server: one of ${SERVERS.join(', ')}`);
    }
    return server as ServerName;
  };
  switch (cmd) {
    case 'up': {
      const ep = await stack.up();
      console.log(JSON.stringify(ep, null, 2));
      return 0;
    }
    case 'down':
      await stack.down();
      return 0;
    case 'status':
      for (const s of SERVERS) {
        console.log(
          `${s.padEnd(8)} ${stack.isRunning(s) ? `running (pid ${stack.pid(s)})` : 'stopped'}  port ${stack.ports[s]}`,
        );
      }
      return 0;
    case 'start':
      await stack.start(one());
      return 0;
    case 'stop':
      await stack.stop(one());
      return 0;
    case 'kill':
      await stack.kill(one());
      return 0;
    case 'restart':
      await stack.restart(one());
      return 0;
    case 'freeze':
      stack.freeze(one());
      return 0;
    case 'thaw':
      stack.thaw(one());
      return 0;
    default:
      console.error(
        'usage: npm run stack -- up|down|status|start|stop|kill|restart|freeze|thaw [mariadb|redis|kafka]',
      );
      return 2;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
