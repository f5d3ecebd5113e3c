/** One detector: settings (threshold, status), label distribution and recent image queries. */
import { type FormEvent, useState } from "react";
import type { Detector } from "../api/types";
import { CAN, useSession } from "../auth";
import { AuthImage } from "../components/AuthImage";
import { BarList, color, LineChart } from "../components/charts";
import { Badge, Empty, ErrorBox, Gate, ago, pct, useLoad } from "../components/ui";
import { ORIGIN_TITLE, answerOrigin } from "../review/answer";
import { Link } from "../router";

export function DetectorPage({ detectorId }: { detectorId: string }) {
  const { client } = useSession();
  const detector = useLoad(() => client.detector(detectorId), [client, detectorId]);
  const stats = useLoad(() => client.detectorStats(detectorId), [client, detectorId], 15_000);
  const queries = useLoad(() => client.imageQueries(detectorId, 1, 24), [client, detectorId], 15_000);

  return (
    <section aria-label="Detector">
      <p className="crumbs">
        <Link to="/detectors">Detectors</Link> /
      </p>
      <Gate state={detector} what="the detector">
        {(d) => (
          <>
            <div className="page-head">
              <div>
                <h1>{d.name}</h1>
                <p className="question">{d.query}</p>
                <p className="muted mono small">{d.id}</p>
              </div>
              <Link to={`/detectors/${d.id}/models`} className="button">
                Models and training
              </Link>
            </div>
            <DetectorSettings detector={d} onSaved={detector.reload} />
          </>
        )}
      </Gate>

      <h2>Labels</h2>
      <Gate state={stats} what="label statistics">
        {(s) => {
          const classes = Array.from(new Set(s.over_time.flatMap((day) => Object.keys(day.counts))));
          return (
            <>
              <p>
                {s.total_labels} labels · {s.pending_reviews} waiting for review · active model{" "}
                {s.active_model_version !== null ? `v${s.active_model_version}` : "none yet"}
              </p>
              <div className="charts">
                <BarList title="Label distribution" values={s.labels_per_class} />
                <BarList title="Answers by source" values={s.by_source} />
                <LineChart
                  title="Labels per day"
                  series={classes.map((name, index) => ({
                    name,
                    color: color(index),
                    points: s.over_time.map((day, i) => ({ x: i, y: day.counts[name] ?? 0 })),
                  }))}
                  xLabel={(i) => s.over_time[i]?.date.slice(5) ?? ""}
                />
              </div>
            </>
          );
        }}
      </Gate>

      <h2>Recent image queries</h2>
      <Gate state={queries} what="recent image queries">
        {(page) =>
          page.results.length === 0 ? (
            <Empty title="No image queries yet.">Send images with the groundlight SDK or through an edge.</Empty>
          ) : (
            <ul className="thumbs" data-testid="recent-queries">
              {page.results.map((iq) => (
                <li key={iq.id} className="thumb-card" data-image-query-id={iq.id}>
                  <AuthImage path={client.imageQueryImagePath(iq.id)} alt={`Image of ${iq.id}`} className="thumb" />
                  <div>
                    {answerOrigin(iq.result) === "waiting" ? (
                      <Badge kind="queued">waiting for a person</Badge>
                    ) : (
                      <>
                        <Badge kind="answer">{iq.result?.label}</Badge> {pct(iq.result?.confidence, 0)}
                        <div className="muted small">{ORIGIN_TITLE[answerOrigin(iq.result)]}</div>
                      </>
                    )}
                    <div className="muted small">{ago(iq.created_at)}</div>
                  </div>
                </li>
              ))}
            </ul>
          )
        }
      </Gate>
    </section>
  );
}

function DetectorSettings({ detector, onSaved }: { detector: Detector; onSaved: () => void }) {
  const { client, me } = useSession();
  const [threshold, setThreshold] = useState(String(detector.confidence_threshold));
  const [status, setStatus] = useState<"ON" | "OFF">(detector.status === "OFF" ? "OFF" : "ON");
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);
  const canEdit = CAN.editDetectors(me.role);
  const classNames = detector.mode_configuration?.class_names ?? [];

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    const value = Number(threshold);
    if (!(value >= 0 && value <= 1)) return setError(new Error("The confidence threshold is a number between 0 and 1."));
    setError(null);
    try {
      await client.patchDetector(detector.id, { confidence_threshold: value, status });
      setSaved(true);
      onSaved();
    } catch (err) {
      setError(err);
    }
  };

  return (
    <form className="card form inline" onSubmit={submit} aria-label="Detector settings">
      <span>
        Mode: <strong>{detector.mode === "MULTI_CLASS" ? `multi-class (${classNames.join(", ")})` : detector.mode.toLowerCase()}</strong>
      </span>
      <label>
        Confidence threshold
        <input
          name="confidence_threshold"
          type="number"
          min="0"
          max="1"
          step="0.01"
          value={threshold}
          disabled={!canEdit}
          onChange={(e) => {
            setThreshold(e.target.value);
            setSaved(false);
          }}
        />
      </label>
      <label>
        Status
        <select
          name="status"
          value={status}
          disabled={!canEdit}
          onChange={(e) => {
            setStatus(e.target.value as "ON" | "OFF");
            setSaved(false);
          }}
        >
          <option value="ON">ON</option>
          <option value="OFF">OFF</option>
        </select>
      </label>
      {canEdit && (
        <button type="submit" className="primary">
          Save
        </button>
      )}
      {saved && <span role="status">Saved.</span>}
      {error !== null && <ErrorBox error={error} />}
    </form>
  );
}
