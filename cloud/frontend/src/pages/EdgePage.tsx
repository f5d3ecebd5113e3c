/** One edge: its hourly counters per detector as charts. */
import type { Edge, EdgeHour } from "../api/types";
import { useSession } from "../auth";
import { color, LineChart } from "../components/charts";
import { Empty, Gate, ago, num, pct, useLoad } from "../components/ui";
import { Link } from "../router";
import { useDetectorNames } from "./EdgesPage";

/** What a person reads in the hourly counters; the rest (confidence bins, ...) are internal. */
const COUNTERS = ["queries", "edge_answers", "escalations", "audits"];

/** The detectors the edge serves now (from its last heartbeat and registration). */
export function currentDetectorIds(edge: Edge): string[] {
  return Array.from(new Set([...edge.detectors.map((d) => d.detector_id), ...(edge.detector_ids ?? [])]));
}

/**
 * Queries per hour and the share escalated, over the edge's latest reported hour (summed
 * over its current detectors): what the list shows when the heartbeat carries no rates.
 */
export function hourlyRates(edge: Edge, hourly: EdgeHour[]): { queryRate: number | null; escalationRate: number | null } {
  const current = new Set(currentDetectorIds(edge));
  const rows = hourly.filter((r) => current.has(r.detector_id));
  if (rows.length === 0) return { queryRate: null, escalationRate: null };
  const latest = rows.reduce((max, r) => (r.hour > max ? r.hour : max), rows[0].hour);
  const inHour = rows.filter((r) => r.hour === latest);
  const queries = inHour.reduce((sum, r) => sum + (r.counters.queries ?? 0), 0);
  const escalations = inHour.reduce((sum, r) => sum + (r.counters.escalations ?? 0), 0);
  return { queryRate: queries, escalationRate: queries > 0 ? escalations / queries : null };
}

export function RatesText({ rates }: { rates: { queryRate: number | null; escalationRate: number | null } }) {
  return (
    <>
      {rates.queryRate === null ? "–" : `${num(rates.queryRate, 1)} / h`} · {pct(rates.escalationRate)} escalated
    </>
  );
}

/** Hourly rows grouped by detector, hours in order. */
export function byDetector(hourly: EdgeHour[]): Map<string, EdgeHour[]> {
  const groups = new Map<string, EdgeHour[]>();
  for (const row of hourly) {
    const list = groups.get(row.detector_id) ?? [];
    list.push(row);
    groups.set(row.detector_id, list);
  }
  for (const list of groups.values()) list.sort((a, b) => a.hour.localeCompare(b.hour));
  return groups;
}

function hourLabel(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : `${date.getHours().toString().padStart(2, "0")}:00`;
}

export function EdgePage({ edgeId }: { edgeId: string }) {
  const { client } = useSession();
  const edge = useLoad(() => client.edge(edgeId), [client, edgeId], 30_000);
  const detectorNames = useDetectorNames();
  const namesLoaded = detectorNames.size > 0;
  return (
    <section aria-label="Edge">
      <p className="crumbs">
        <Link to="/edges">Edges</Link> /
      </p>
      <Gate state={edge} what="the edge">
        {(e) => {
          const current = currentDetectorIds(e);
          const all = byDetector(e.hourly ?? []);
          // Only the detectors the edge serves now and that still exist, each by name.
          const groups = new Map(
            [...all.entries()].filter(([id]) => current.includes(id) && (!namesLoaded || detectorNames.has(id))),
          );
          return (
            <>
              <h1>{e.name}</h1>
              <p>
                Last seen {ago(e.last_seen)} · software {e.software_version ?? "–"} · {current.length} {current.length === 1 ? "detector" : "detectors"}:{" "}
                {current.map((id) => detectorNames.get(id) ?? id).join(", ") || "none"} · latest hour:{" "}
                <RatesText rates={hourlyRates(e, e.hourly ?? [])} />
              </p>
              {groups.size === 0 ? (
                <Empty title="No hourly counters yet.">The edge reports them every hour with its metrics.</Empty>
              ) : (
                <div className="charts">
                  {[...groups.entries()].map(([detectorId, rows]) => {
                    const names = COUNTERS.filter((name) => rows.some((r) => typeof r.counters?.[name] === "number"));
                    return (
                      <LineChart
                        key={detectorId}
                        title={`${detectorNames.get(detectorId) ?? detectorId}: per hour`}
                        series={names.map((name, index) => ({
                            name: name.replaceAll("_", " "),
                            color: color(index),
                            points: rows.map((r, i) => ({ x: i, y: r.counters?.[name] ?? null })),
                          }))}
                        xLabel={(i) => (rows[i] ? hourLabel(rows[i].hour) : "")}
                        xTitle="hour"
                      />
                    );
                  })}
                </div>
              )}
            </>
          );
        }}
      </Gate>
    </section>
  );
}
