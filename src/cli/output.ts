// Output for people and for programs: aligned text tables by default, one JSON array with --json.
// Strings from the guest are sanitised before they get here (os layer); bigints print as hex.

export interface Column<R> {
  header: string;
  get: (row: R) => unknown;
  align?: 'left' | 'right';
  /** Cap on the column width; longer cells are clipped with an ellipsis. */
  max?: number;
}

export function cell(v: unknown): string {
  if (v === undefined || v === null) return '-';
  if (typeof v === 'bigint') return '0x' + v.toString(16);
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (Array.isArray(v)) return v.map(cell).join(',');
  return String(v);
}

export function renderTable<R>(rows: readonly R[], columns: readonly Column<R>[]): string {
  const cells = rows.map((r) =>
    columns.map((c) => {
      const s = cell(c.get(r));
      return c.max !== undefined && s.length > c.max ? s.slice(0, c.max - 1) + '…' : s;
    }),
  );
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i]!.length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => (columns[i]!.align === 'right' ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n') + '\n';
}

/** JSON with bigints as "0x…" strings (addresses) — JSON has no 64-bit integers. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? '0x' + v.toString(16) : v), 2) + '\n';
}

export function print(text: string): void {
  process.stdout.write(text);
}
