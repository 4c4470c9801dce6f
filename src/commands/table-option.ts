import type { CompiledConfig, CompiledMapping } from '../config/types.js';
import { ConfigError } from '../core/errors.js';

/**
 * The mappings a repeatable `--table db.t` selects (every mapping without one). A name that is not
 * mapped is a typo that would silently match nothing: a usage error naming the mapped tables.
 */
export function selectMappings(config: CompiledConfig, tables: readonly string[] = []): CompiledMapping[] {
  for (const table of tables) {
    if (!config.mappings.some((m) => m.table === table)) {
      throw new ConfigError(
        `--table ${table}: not a mapped table; expected one of ${config.mappings.map((m) => m.table).join(', ')}`,
      );
    }
  }
  return tables.length === 0 ? config.mappings : config.mappings.filter((m) => tables.includes(m.table));
}
