/** Detectors: the list with their health at a glance, and the create form. */
import { type FormEvent, useState } from "react";
import type { Detector, DetectorCreate, DetectorStats, ModelVersion } from "../api/types";
import { CAN, useSession } from "../auth";
import { Badge, Empty, ErrorBox, Gate, pct, useLoad } from "../components/ui";
import { Link, navigate } from "../router";

export function DetectorsPage() {
  const { client, me } = useSession();
  const list = useLoad(() => client.detectors(1, 100), [client]);
  const [creating, setCreating] = useState(false);
  const canEdit = CAN.editDetectors(me.role);

  return (
    <section aria-label="Detectors">
      <div className="page-head">
        <h1>Detectors</h1>
        {canEdit && !creating && (
          <button type="button" className="primary" onClick={() => setCreating(true)}>
            New detector
          </button>
        )}
      </div>
      {creating && (
        <CreateDetector
          onDone={(created) => {
            setCreating(false);
            if (created) navigate(`/detectors/${created.id}`);
          }}
        />
      )}
      <Gate state={list} what="detectors">
        {(page) =>
          page.results.length === 0 ? (
            <Empty title="No detectors yet.">
              {canEdit ? "Create one with “New detector”, or with the groundlight SDK." : "Ask an admin to create one."}
            </Empty>
          ) : (
            <div className="table-wrap">
              <table className="table" data-testid="detectors-table">
                <thead>
                  <tr>
                    <th>Name / question</th>
                    <th>Mode</th>
                    <th>Threshold</th>
                    <th>Status</th>
                    <th>Labels</th>
                    <th>Active model</th>
                    <th>Pending reviews</th>
                  </tr>
                </thead>
                <tbody>
                  {page.results.map((detector) => (
                    <DetectorRow key={detector.id} detector={detector} />
                  ))}
                </tbody>
              </table>
              {page.count > page.results.length && (
                <p className="muted">
                  Showing {page.results.length} of {page.count}.
                </p>
              )}
            </div>
          )
        }
      </Gate>
    </section>
  );
}

function DetectorRow({ detector }: { detector: Detector }) {
  const { client } = useSession();
  const extra = useLoad(
    async () => {
      const [stats, models] = await Promise.all([
        client.detectorStats(detector.id).catch(() => null as DetectorStats | null),
        client.models(detector.id).catch(() => [] as ModelVersion[]),
      ]);
      return { stats, models };
    },
    [client, detector.id],
  );
  const stats = extra.data?.stats ?? null;
  const active = extra.data?.models.find((model) => model.status === "active") ?? null;
  const classes = stats ? Object.entries(stats.labels_per_class) : [];
  return (
    <tr>
      <td>
        <Link to={`/detectors/${detector.id}`}>{detector.name}</Link>
        <div className="muted small">{detector.query}</div>
      </td>
      <td>
        {detector.mode === "MULTI_CLASS" ? "multi-class" : detector.mode.toLowerCase()}
        {detector.mode_configuration?.class_names && (
          <div className="muted small">{detector.mode_configuration.class_names.join(", ")}</div>
        )}
      </td>
      <td>{detector.confidence_threshold.toFixed(2)}</td>
      <td>
        <Badge kind={detector.status === "OFF" ? "off" : "on"}>{detector.status ?? "ON"}</Badge>
      </td>
      <td>
        {stats ? (
          <>
            {stats.total_labels}
            {classes.length > 0 && (
              <div className="muted small">{classes.map(([name, count]) => `${name} ${count}`).join(" · ")}</div>
            )}
          </>
        ) : extra.loading ? (
          "…"
        ) : (
          "–"
        )}
      </td>
      <td>
        {active ? (
          <>
            v{active.version} <span className="muted">({active.trainer})</span>
            <div className="muted small">
              {typeof active.metrics.balanced_accuracy === "number"
                ? `balanced accuracy ${pct(active.metrics.balanced_accuracy)}`
                : `accuracy ${pct(active.metrics.accuracy)}`}
            </div>
          </>
        ) : extra.loading ? (
          "…"
        ) : (
          <span className="muted">none yet</span>
        )}
      </td>
      <td>{stats ? stats.pending_reviews : "–"}</td>
    </tr>
  );
}

function parseClassNames(text: string): string[] {
  return text
    .split(/[,\n]/)
    .map((name) => name.trim())
    .filter(Boolean);
}

export function CreateDetector({ onDone }: { onDone: (created: Detector | null) => void }) {
  const { client } = useSession();
  const [name, setName] = useState("");
  const [query, setQuery] = useState("");
  const [mode, setMode] = useState<"BINARY" | "MULTI_CLASS">("BINARY");
  const [classes, setClasses] = useState("");
  const [threshold, setThreshold] = useState("0.9");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const value = Number(threshold);
    const classNames = parseClassNames(classes);
    if (!name.trim() || !query.trim()) return setError(new Error("Give the detector a name and a question."));
    if (!(value >= 0 && value <= 1)) return setError(new Error("The confidence threshold is a number between 0 and 1."));
    if (mode === "MULTI_CLASS" && classNames.length < 2) return setError(new Error("A multi-class detector needs at least two class names, separated by commas."));
    const body: DetectorCreate = { name: name.trim(), query: query.trim(), confidence_threshold: value, mode };
    if (mode === "MULTI_CLASS") body.mode_configuration = { class_names: classNames };
    setBusy(true);
    try {
      onDone(await client.createDetector(body));
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  return (
    <form className="card form" onSubmit={submit} aria-label="New detector">
      <h2>New detector</h2>
      <label>
        Name
        <input name="name" value={name} onChange={(e) => setName(e.target.value)} placeholder="weld-crack" />
      </label>
      <label>
        Question
        <input name="query" value={query} onChange={(e) => setQuery(e.target.value)} placeholder="Is there a crack on the weld?" />
      </label>
      <label>
        Mode
        <select name="mode" value={mode} onChange={(e) => setMode(e.target.value as "BINARY" | "MULTI_CLASS")}>
          <option value="BINARY">Binary (yes / no)</option>
          <option value="MULTI_CLASS">Multi-class</option>
        </select>
      </label>
      {mode === "MULTI_CLASS" && (
        <label>
          Class names (comma-separated)
          <input name="class_names" value={classes} onChange={(e) => setClasses(e.target.value)} placeholder="good, scratch, dent" />
        </label>
      )}
      <label>
        Confidence threshold
        <input name="confidence_threshold" type="number" min="0" max="1" step="0.01" value={threshold} onChange={(e) => setThreshold(e.target.value)} />
      </label>
      {error !== null && <ErrorBox error={error} />}
      <div className="row">
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Creating…" : "Create"}
        </button>
        <button type="button" onClick={() => onDone(null)}>
          Cancel
        </button>
      </div>
    </form>
  );
}
