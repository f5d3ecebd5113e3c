/**
 * Any JSON value as something a person can read: numbers as numbers (fractions in [0, 1]
 * under a name that reads as a rate shown as %), lists of scalars inline, objects as nested
 * tables. Never "[object Object]".
 */
import type { ReactNode } from "react";

const RATE_WORDS = /(accuracy|recall|precision|coverage|rate|share|confidence|f1|auroc|auc|score)/i;

export function humanKey(key: string): string {
  return key.replaceAll("_", " ");
}

export function formatScalar(value: unknown, key = ""): string {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (Number.isNaN(value)) return "–";
    if (RATE_WORDS.test(key) && value >= 0 && value <= 1) return `${(value * 100).toFixed(1)} %`;
    return Number.isInteger(value) ? String(value) : value.toFixed(3);
  }
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

function isScalar(value: unknown): boolean {
  return value === null || value === undefined || typeof value !== "object";
}

export function JsonValue({ value, name = "" }: { value: unknown; name?: string }): ReactNode {
  if (isScalar(value)) return formatScalar(value, name);
  if (Array.isArray(value)) {
    if (value.length === 0) return <span className="muted">none</span>;
    if (value.every(isScalar)) {
      const shown = value.slice(0, 4).map((v) => formatScalar(v, name));
      // Long lists (the ids of 50 evaluation images) as a count and a sample, not a wall of ids.
      return value.length > 6 ? `${value.length} items: ${shown.join(", ")}, …` : value.map((v) => formatScalar(v, name)).join(", ");
    }
    return (
      <ol className="json-list">
        {value.map((entry, index) => (
          <li key={index}>
            <JsonValue value={entry} name={name} />
          </li>
        ))}
      </ol>
    );
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) return <span className="muted">none</span>;
  return (
    <table className="json-table">
      <tbody>
        {entries.map(([key, entry]) => (
          <tr key={key}>
            <th scope="row">{humanKey(key)}</th>
            <td>
              <JsonValue value={entry} name={key || name} />
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
