import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli.js';

const ROOT = resolve(import.meta.dirname, '../..');
const pkg = JSON.parse(readFileSync(resolve(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  license: string;
};

describe('cachesync --version and the license', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('prints the package version and exits 0', async () => {
    const written: string[] = [];
    vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    expect(await main(['node', 'cachesync', '--version'])).toBe(0);
    expect(written.join('')).toBe(`${pkg.version}\n`);
  });

  it('ships a LICENSE file with the license package.json names', () => {
    expect(pkg.license).toBe('Apache-2.0');
    const license = readFileSync(resolve(ROOT, 'LICENSE'), 'utf8');
    expect(license).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004/);
  });
});
