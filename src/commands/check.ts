import type { CompiledConfig } from '../config/types.js';
import { checkGuardEviction } from '../consumer/guard-checks.js';
import { checkSourceOverlap } from '../consumer/source-registry.js';
import { checkRedis } from '../consumer/redis-client.js';
import type { Finding } from '../core/finding.js';
import { checkKafka } from '../kafka/kafka-client.js';
import { checkSource } from '../tailer/source-checks.js';

/** `cachesync check`: prints each finding; exit 0 only if every check holds. */
export async function runCheck(
  config: CompiledConfig,
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  const findings: Finding[] = [
    { ok: true, what: `config ${config.file}: ${config.mappings.length} mapped table(s)` },
    ...(await checkSource(config)),
    ...(await checkKafka(config.kafka)),
    ...(await checkRedis(config.redis)),
    ...(await checkGuardEviction(config.redis)),
    ...(await checkSourceOverlap(config)),
  ];
  for (const f of findings) {
    const tag = !f.ok ? 'FAIL' : f.warning ? 'WARN' : 'ok  ';
    out.write(`${tag} ${f.what}${f.why ? `\n     ${f.why}` : ''}\n`);
  }
  const failed = findings.filter((f) => !f.ok).length;
  out.write(failed === 0 ? 'all checks passed\n' : `${failed} check(s) failed\n`);
  return failed === 0 ? 0 : 1;
}
