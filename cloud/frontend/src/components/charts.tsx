/**
 * Inline SVG charts: a line chart with several series and a horizontal bar list.
 * Small on purpose; the app works offline and needs no chart library.
 */

export interface Series {
  name: string;
  color: string;
  points: { x: number; y?: number | null }[];
}

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

export function color(index: number): string {
  return PALETTE[index % PALETTE.length];
}

function niceMax(value: number): number {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  const scaled = value / power;
  const step = scaled <= 1 ? 1 : scaled <= 2 ? 2 : scaled <= 5 ? 5 : 10;
  return step * power;
}

export interface LineChartProps {
  title: string;
  series: Series[];
  /** Fixed y range (for example 0..1 for accuracies); otherwise 0..nice max. */
  yMax?: number;
  yFormat?: (value: number) => string;
  xLabel?: (x: number) => string;
  xTitle?: string;
  height?: number;
}

export function LineChart({ title, series, yMax, yFormat = (v) => String(v), xLabel = String, xTitle, height = 200 }: LineChartProps) {
  const width = 560;
  // The right margin leaves room for half of a date-and-time label under the last point.
  const pad = { left: 58, right: 40, top: 12, bottom: xTitle ? 42 : 30 };
  const values = series.flatMap((s) => s.points);
  const xs = values.map((p) => p.x);
  const ys = values.map((p) => p.y).filter((y): y is number => typeof y === "number" && Number.isFinite(y));
  const hasData = ys.length > 0;
  const xMin = xs.length ? Math.min(...xs) : 0;
  const xMax = xs.length ? Math.max(...xs) : 1;
  const top = yMax ?? niceMax(ys.length ? Math.max(...ys) : 1);
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const sx = (x: number) => pad.left + (xMax === xMin ? plotW / 2 : ((x - xMin) / (xMax - xMin)) * plotW);
  const sy = (y: number) => pad.top + plotH - (Math.min(y, top) / top) * plotH;
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => f * top);
  const xTicks = Array.from(new Set(xs)).sort((a, b) => a - b);
  // As many x labels as fit side by side (about 8 px per character at the tick size).
  const widest = Math.max(1, ...xTicks.map((x) => xLabel(x).length));
  const fit = Math.max(2, Math.floor(plotW / (widest * 8 + 16)));
  const shownX = xTicks.filter((_, i) => i % Math.max(1, Math.ceil(xTicks.length / fit)) === 0);

  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      {!hasData ? (
        <p className="muted">No data yet.</p>
      ) : (
        <>
          <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label={title}>
            {ticks.map((t) => (
              <g key={t}>
                <line x1={pad.left} x2={width - pad.right} y1={sy(t)} y2={sy(t)} className="grid" />
                <text x={pad.left - 6} y={sy(t) + 4} textAnchor="end" className="tick">
                  {yFormat(t)}
                </text>
              </g>
            ))}
            {shownX.map((x) => (
              <text key={x} x={sx(x)} y={pad.top + plotH + 16} textAnchor="middle" className="tick">
                {xLabel(x)}
              </text>
            ))}
            {xTitle && (
              <text x={pad.left + plotW / 2} y={height - 4} textAnchor="middle" className="tick">
                {xTitle}
              </text>
            )}
            {series.map((s) => {
              const pts = s.points.filter((p): p is { x: number; y: number } => typeof p.y === "number" && Number.isFinite(p.y));
              const d = pts.map((p, i) => `${i === 0 ? "M" : "L"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
              return (
                <g key={s.name}>
                  <path d={d} fill="none" stroke={s.color} strokeWidth={2} />
                  {pts.map((p) => (
                    <circle key={p.x} cx={sx(p.x)} cy={sy(p.y)} r={3} fill={s.color}>
                      <title>{`${s.name} at ${xLabel(p.x)}: ${yFormat(p.y)}`}</title>
                    </circle>
                  ))}
                </g>
              );
            })}
          </svg>
          <ul className="legend">
            {series.map((s) => (
              <li key={s.name}>
                <span className="swatch" style={{ background: s.color }} />
                {s.name}
              </li>
            ))}
          </ul>
        </>
      )}
    </figure>
  );
}

export function BarList({ title, values, format = String }: { title: string; values: Record<string, number>; format?: (v: number) => string }) {
  const entries = Object.entries(values).sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...entries.map(([, v]) => v));
  return (
    <figure className="chart">
      <figcaption>{title}</figcaption>
      {entries.length === 0 ? (
        <p className="muted">No data yet.</p>
      ) : (
        <ul className="bars">
          {entries.map(([name, value], index) => (
            <li key={name}>
              <span className="bar-name">{name}</span>
              <span className="bar-track">
                <span className="bar-fill" style={{ width: `${(value / max) * 100}%`, background: color(index) }} />
              </span>
              <span className="bar-value">{format(value)}</span>
            </li>
          ))}
        </ul>
      )}
    </figure>
  );
}

export function ProgressBar({ value, label }: { value: number; label: string }) {
  const clamped = Math.max(0, Math.min(1, value));
  return (
    <div className="progress" role="progressbar" aria-label={label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(clamped * 100)}>
      <div className="progress-fill" style={{ width: `${clamped * 100}%` }} />
      <span className="progress-text">{Math.round(clamped * 100)} %</span>
    </div>
  );
}
