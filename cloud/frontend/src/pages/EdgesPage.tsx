/** Edges: is each one alive, which versions it runs, how much it answers itself. */
import type { Edge } from "../api/types";
import { useSession } from "../auth";
import { Badge, Empty, Gate, ago, num, pct, useLoad } from "../components/ui";
import { Link } from "../router";
import { RatesText, hourlyRates } from "./EdgePage";

/** Detector names by id, for pages that only get ids (empty until loaded, or on error). */
export function useDetectorNames(): Map<string, string> {
  const { client } = useSession();
  const list = useLoad(() => client.detectors(1, 1000), [client]);
  return new Map((list.data?.results ?? []).map((d) => [d.id, d.name]));
}

/** An edge not heard from for five minutes is shown as stale. */
const STALE_S = 300;

export function rate(edge: Edge, name: "query_rate" | "escalation_rate"): number | null {
  return edge[name] ?? edge.counters?.[name] ?? null;
}

export function EdgesPage() {
  const { client } = useSession();
  const edges = useLoad(() => client.edges(), [client], 15_000);
  const names = useDetectorNames();
  return (
    <section aria-label="Edges">
      <h1>Edges</h1>
      <Gate state={edges} what="edges">
        {(list) =>
          list.length === 0 ? (
            <Empty title="No edge has registered yet.">Start an edge with a device token; it registers itself on its first heartbeat.</Empty>
          ) : (
            <div className="table-wrap">
              <table className="table" data-testid="edges-table">
                <thead>
                  <tr>
                    <th>Edge</th>
                    <th>Last seen</th>
                    <th>Software</th>
                    <th>Detectors (primary / OODD version)</th>
                    <th>Queries and escalations</th>
                  </tr>
                </thead>
                <tbody>
                  {list.map((edge) => {
                    const stale = !edge.last_seen || (Date.now() - Date.parse(edge.last_seen)) / 1000 > STALE_S;
                    return (
                      <tr key={edge.id}>
                        <td>
                          <Link to={`/edges/${edge.id}`}>{edge.name}</Link>
                          <div className="muted mono small">{edge.id}</div>
                        </td>
                        <td>
                          <Badge kind={stale ? "off" : "on"}>{stale ? "stale" : "online"}</Badge> {ago(edge.last_seen)}
                        </td>
                        <td>{edge.software_version ?? "–"}</td>
                        <td className="small">
                          {edge.detectors.length === 0
                            ? (edge.detector_ids ?? []).map((id) => names.get(id) ?? id).join(", ") || "none"
                            : edge.detectors.map((d) => (
                                <div key={d.detector_id}>
                                  {names.get(d.detector_id) ?? d.detector_id}: v{d.primary_version ?? "–"} / v{d.oodd_version ?? "–"}
                                </div>
                              ))}
                        </td>
                        <td>
                          <EdgeRates edge={edge} />
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
          )
        }
      </Gate>
    </section>
  );
}

/** The rates from the heartbeat where it carries them, else from the edge's latest hourly counters. */
function EdgeRates({ edge }: { edge: Edge }) {
  const { client } = useSession();
  const given = rate(edge, "query_rate");
  const detail = useLoad(async () => (given === null ? client.edge(edge.id) : null), [client, edge.id, given]);
  if (given !== null) return <>{`query rate ${num(given, 1)} · ${pct(rate(edge, "escalation_rate"))} escalated`}</>;
  if (!detail.data) return <>{detail.loading ? "…" : "–"}</>;
  return (
    <span className="small">
      <RatesText rates={hourlyRates(edge, detail.data.hourly ?? [])} /> (latest hour)
    </span>
  );
}
