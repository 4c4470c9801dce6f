import { MessageError } from './errors.js';

type Part = { literal: string } | { column: string };

/** A row image: column name to its JSON-safe value (see change-event.ts). */
export type Row = Readonly<Record<string, unknown>>;

/**
 * What a placeholder column can render, as far as matching keys goes: an integer column renders
 * only an optional minus sign and digits; anything else may render any text.
 */
export type ColumnKind = 'integer' | 'text';

/**
 * A cache key template: literal text with `{column}` placeholders; `{{` and `}}` are literal
 * braces, so Redis Cluster hash tags can be written (`user:{{{id}}}` renders `user:{42}`).
 */
export class KeyTemplate {
  /** Placeholder columns, in order of first use. */
  readonly columns: readonly string[];

  private constructor(
    readonly source: string,
    private readonly parts: readonly Part[],
  ) {
    this.columns = [...new Set(parts.flatMap((p) => ('column' in p ? [p.column] : [])))];
  }

  /** Parses a template, throwing a message that says what is wrong and where. */
  static parse(source: string): KeyTemplate {
    const parts: Part[] = [];
    let literal = '';
    for (let i = 0; i < source.length; i++) {
      const ch = source[i];
      if (ch === '{' && source[i + 1] === '{') {
        literal += '{';
        i++;
      } else if (ch === '}' && source[i + 1] === '}') {
        literal += '}';
        i++;
      } else if (ch === '{') {
        const end = source.indexOf('}', i + 1);
        if (end < 0) throw new Error(`"{" at offset ${i} is never closed; write "{{" for a literal brace`);
        const column = source.slice(i + 1, end);
        if (!/^[^{}\s]+$/.test(column)) {
          throw new Error(`placeholder at offset ${i} must name a column, as in {id}`);
        }
        if (literal) parts.push({ literal });
        literal = '';
        parts.push({ column });
        i = end;
      } else if (ch === '}') {
        throw new Error(`"}" at offset ${i} closes nothing; write "}}" for a literal brace`);
      } else {
        literal += ch;
      }
    }
    if (literal) parts.push({ literal });
    if (!parts.some((p) => 'column' in p)) {
      throw new Error('a key template needs at least one {column} placeholder, or every row maps to one key');
    }
    return new KeyTemplate(source, parts);
  }

  /** A Redis MATCH pattern for every key this template can render (placeholders become `*`). */
  toGlob(): string {
    return this.parts.map((p) => ('column' in p ? '*' : p.literal.replace(/[*?[\]\\]/g, '\\$&'))).join('');
  }

  /** True when the template starts with a placeholder, so its glob starts with `*`. */
  get hasLiteralPrefix(): boolean {
    return 'literal' in (this.parts[0] ?? {});
  }

  /**
   * The inverse of render, for keys found by SCAN: the placeholder values of a key this template
   * could have rendered, or undefined when it could not have (`user:{id}` with an integer `id`
   * does not match `user:session:abc`). A column used twice must render the same text both times.
   */
  matcher(
    kinds: Readonly<Record<string, ColumnKind>> = {},
  ): (key: string) => Record<string, string> | undefined {
    const groups: string[] = [];
    const pattern = this.parts
      .map((part) => {
        if ('literal' in part) return part.literal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        const seen = groups.indexOf(part.column);
        if (seen >= 0) return `\\${seen + 1}`;
        groups.push(part.column);
        return kinds[part.column] === 'integer' ? '(-?\\d+)' : '([\\s\\S]*?)';
      })
      .join('');
    const regex = new RegExp(`^${pattern}$`);
    return (key) => {
      const match = regex.exec(key);
      if (!match) return undefined;
      const values: Record<string, string> = {};
      groups.forEach((column, i) => (values[column] = match[i + 1]!));
      return values;
    };
  }

  /**
   * Renders the key for a row image. A NULL in a placeholder column renders no key (undefined).
   * A column the row lacks, or a value with no sensible text form, is the message's fault.
   */
  render(row: Row): string | undefined {
    let out = '';
    for (const part of this.parts) {
      if ('literal' in part) {
        out += part.literal;
        continue;
      }
      if (!Object.prototype.hasOwnProperty.call(row, part.column)) {
        throw new MessageError(`key "${this.source}": the row has no column "${part.column}"`);
      }
      const value = row[part.column];
      if (value === null || value === undefined) return undefined;
      if (typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint') {
        out += String(value);
      } else if (typeof value === 'boolean') {
        out += value ? '1' : '0';
      } else {
        throw new MessageError(
          `key "${this.source}": column "${part.column}" holds a ${typeof value}, not a scalar`,
        );
      }
    }
    return out;
  }
}
