/**
 * A change's version orders every change cachesync reads, across servers and over time. It is a
 * tuple of unsigned decimal integers, `epoch:file:pos:seq`:
 *
 * - `epoch`: the source epoch. It starts a new, higher value whenever binlog coordinates stop
 *   comparing with those read before: a failover to another server, a `RESET MASTER`, a restore of
 *   the database from a backup. So every change read after such an event is newer than every
 *   change read before it.
 * - `file`: the binlog file's index (`binlog.000042` -> 42).
 * - `pos`: the position where the change's transaction starts in that file.
 * - `seq`: the change's sequence within its transaction, from 1 (0 is kept for {@link versionBefore}).
 *
 * Parts compare as integers, by digit count and then digit by digit, never as floating point, so no
 * part has a width limit (row 10 000 000 of a transaction versions like row 1). Redis compares
 * them with the same rule ({@link VERSION_COMPARE_LUA}).
 *
 * A legacy version of three fixed-width parts (`0000000003:0000000000012345:0000002`, written
 * before epochs existed) is read as epoch 0.
 */
export type Version = string;

/** One part: an unsigned decimal integer. 40 digits is beyond any binlog coordinate or row count. */
const PART = String.raw`\d{1,40}`;
const VERSION_PATTERN = new RegExp(`^${PART}:${PART}:${PART}(?::${PART})?$`);

/** `binlog.000042` -> 42. Throws on a name without a numeric suffix (never seen on MySQL or MariaDB). */
export function binlogFileIndex(filename: string): number {
  const match = /\.(\d+)$/.exec(filename);
  if (!match?.[1]) throw new RangeError(`binlog file name "${filename}" has no numeric suffix`);
  return Number(match[1]);
}

/**
 * The version of the `seq`-th change (from 1) of the transaction that starts at `txPosition` of
 * binlog file `filename`, read in source epoch `epoch`.
 */
export function makeVersion(epoch: number, filename: string, txPosition: number, seq: number): Version {
  checkPart('seq', seq);
  return `${versionPrefix(epoch, filename, txPosition)}${seq}`;
}

/**
 * `epoch:file:pos:`, the part every change of one transaction shares: its versions are this prefix
 * followed by their seq (from 1). A reader of many rows builds it once per transaction.
 */
export function versionPrefix(epoch: number, filename: string, txPosition: number): string {
  checkPart('epoch', epoch);
  checkPart('txPosition', txPosition);
  return `${epoch}:${binlogFileIndex(filename)}:${txPosition}:`;
}

function checkPart(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`version ${name} must be a non-negative integer, got ${value}`);
  }
}

/**
 * A version that sorts after every change of a transaction that started before `position` of
 * `filename` (in `epoch`, and of every earlier epoch or file) and before every change of a
 * transaction that starts at or after it. A snapshot read at binlog position P writes with
 * `versionBefore(P)`: a change committed before the read loses to it, one committed after wins.
 */
export function versionBefore(epoch: number, filename: string, position: number): Version {
  return makeVersion(epoch, filename, position, 0);
}

/** True for a version of either form (`epoch:file:pos:seq`, or the legacy `file:pos:seq`). */
export function isVersion(value: unknown): value is Version {
  return typeof value === 'string' && VERSION_PATTERN.test(value);
}

/** The parts of a version as canonical digit strings (no leading zeros; 0 is ''), epoch first. */
function canonicalParts(version: Version): string[] {
  const parts = version.split(':').map((p) => p.replace(/^0+/, ''));
  if (parts.length === 3) parts.unshift('');
  return parts;
}

/** Negative if a is older than b, 0 if they are the same change, positive if a is newer. */
export function compareVersions(a: Version, b: Version): number {
  const x = canonicalParts(a);
  const y = canonicalParts(b);
  for (let i = 0; i < 4; i++) {
    const p = x[i] ?? '';
    const q = y[i] ?? '';
    if (p.length !== q.length) return p.length < q.length ? -1 : 1;
    if (p !== q) return p < q ? -1 : 1;
  }
  return 0;
}

/** The source epoch a version was read in (0 for a legacy version). */
export function versionEpoch(version: Version): number {
  // Read per consumed change (futureVersionProblem): only the first part is looked at.
  const first = version.indexOf(':');
  const legacy = version.indexOf(':', version.indexOf(':', first + 1) + 1) < 0;
  return legacy ? 0 : Number(version.slice(0, first));
}

/**
 * How far a version's epoch may run ahead of this host's clock. A tailer starts an epoch at
 * max(previous + 1, its clock in seconds), so a real epoch is ahead only by the clock difference
 * between the tailer's host and this one, which NTP keeps far below an hour.
 */
export const FUTURE_EPOCH_TOLERANCE_S = 3600;

/**
 * Why `version` cannot have come from a tailer: its epoch lies more than
 * {@link FUTURE_EPOCH_TOLERANCE_S} ahead of `nowMs`. Such a version written to a guard would make
 * every real change of the key look older, and be skipped, until the epochs caught up. Undefined
 * when the version is plausible.
 */
export function futureVersionProblem(version: Version, nowMs: number): string | undefined {
  const epoch = versionEpoch(version);
  const limit = Math.floor(nowMs / 1000) + FUTURE_EPOCH_TOLERANCE_S;
  if (epoch <= limit) return undefined;
  return (
    `source.version ${version} is from the future: its epoch ${epoch} is more than ` +
    `${FUTURE_EPOCH_TOLERANCE_S / 3600} h ahead of this host's clock (epoch ${Math.floor(nowMs / 1000)}); ` +
    `cachesync's tailer never writes such a version: another program wrote this message, or the ` +
    `clocks of the tailer's and the consumer's hosts are far apart`
  );
}

/**
 * The same comparison in Lua, for the Redis scripts: defines `cs_compare_versions(a, b)`, returning
 * -1, 0 or 1 like {@link compareVersions}, and `cs_compare_parts(x, y)` for versions already split
 * by `cs_version_parts` (a script comparing many keys against one version splits it once). Every
 * script that compares versions starts with it, so TypeScript and Redis can never disagree on an
 * order.
 */
export const VERSION_COMPARE_LUA = `
local function cs_version_parts(v)
  local parts = {}
  for p in string.gmatch(v, '[^:]+') do parts[#parts + 1] = (string.gsub(p, '^0+', '')) end
  if #parts == 3 then table.insert(parts, 1, '') end
  return parts
end
local function cs_compare_parts(x, y)
  for i = 1, 4 do
    local p, q = x[i] or '', y[i] or ''
    if #p ~= #q then if #p < #q then return -1 else return 1 end end
    if p ~= q then if p < q then return -1 else return 1 end end
  end
  return 0
end
local cs_find = string.find
local function cs_colons(v)
  local i = cs_find(v, ':', 1, true)
  local j = i and cs_find(v, ':', i + 1, true)
  return i, j, j and cs_find(v, ':', j + 1, true)
end
local function cs_compare_versions(a, b)
  if a == b then return 0 end
  -- Two versions of four parts whose colons sit at the same places have parts of the same widths:
  -- they compare digit by digit, as whole strings (the common case: one epoch, one binlog file).
  if #a == #b then
    local i, j, k = cs_colons(a)
    if k then
      local x, y, z = cs_colons(b)
      if i == x and j == y and k == z then
        if a < b then return -1 else return 1 end
      end
    end
  end
  return cs_compare_parts(cs_version_parts(a), cs_version_parts(b))
end
`;
