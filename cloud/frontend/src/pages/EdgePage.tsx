/** One edge: its hourly counters per detector as charts. */
import type { EdgeHour } from "../api/types";
import { useSession } from "../auth";
import { color, LineChart } from "../components/charts";
import { Empty, Gate, ago, useLoad } from "../components/ui";
import { Link } from "../router";
import { useDetectorNames } from "./EdgesPage";

const COUNTERS = ["queries", "edge_answers", "escalations", "audits"];

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
  return (
    <section aria-label="Edge">
      <p className="crumbs">
        <Link to="/edges">Edges</Link> /
      </p>
      <Gate state={edge} what="the edge">
        {(e) => {
          const groups = byDetector(e.hourly ?? []);
          return (
            <>
              <h1>{e.name}</h1>
              <p>
                Last seen {ago(e.last_seen)} · software {e.software_version ?? "–"} · {e.detectors.length || e.detector_ids?.length || 0} detectors
              </p>
              {groups.size === 0 ? (
                <Empty title="No hourly counters yet.">The edge reports them every hour with its metrics.</Empty>
              ) : (
                <div className="charts">
                  {[...groups.entries()].map(([detectorId, rows]) => {
                    const names = Array.from(new Set([...COUNTERS, ...rows.flatMap((r) => Object.keys(r.counters ?? {}))])).filter(
                      (name) => COUNTERS.includes(name) || rows.some((r) => typeof r.counters?.[name] === "number"),
                    );
                    return (
                      <LineChart
                        key={detectorId}
                        title={`${detectorNames.get(detectorId) ?? detectorId}: per hour`}
                        series={names
                          .filter((name) => !name.includes("histogram"))
                          .map((name, index) => ({
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
