import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

/** What /healthz and /readyz report, read from the components' lifecycle states. */
export interface HealthSource {
  /** False only when a main loop is dead (the process should be restarted). */
  live(): boolean;
  /** True while connected and streaming (not starting, reconnecting or paused on an outage). */
  ready(): boolean;
  /** Component states, for the probe's body. */
  describe(): Record<string, string>;
  /** The server each component waits for (`redis`, `kafka`, `mysql`), when one does not answer. */
  waitingOn?(): Record<string, string>;
}

/** Serves GET /metrics (Prometheus text), /healthz (liveness) and /readyz (readiness). */
export class HttpServer {
  private constructor(private readonly server: Server) {}

  static async start(opts: {
    host: string;
    port: number;
    registry: Registry;
    health: HealthSource;
  }): Promise<HttpServer> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (path === '/metrics') {
        opts.registry.metrics().then(
          (text) => res.writeHead(200, { 'content-type': opts.registry.contentType }).end(text),
          (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(err.message),
        );
        return;
      }
      if (path === '/healthz' || path === '/readyz') {
        const ok = path === '/healthz' ? opts.health.live() : opts.health.ready();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' }).end(
          JSON.stringify({
            status: ok ? 'ok' : 'unavailable',
            components: opts.health.describe(),
            waitingOn: opts.health.waitingOn?.() ?? {},
          }),
        );
        return;
      }
      res
        .writeHead(404, { 'content-type': 'text/plain' })
        .end('not found: try /metrics, /healthz or /readyz\n');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, opts.host, () => resolve());
    });
    return new HttpServer(server);
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
