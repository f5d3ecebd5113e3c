/**
 * Models and training of one detector: versions with their metrics, a side-by-side
 * comparison, activate / roll back, training jobs, and how the edges' answer rate and
 * accuracy grew with the labels (from the cloud's edge-learning stats, not the versions'
 * validation metrics).
 */
import { useState } from "react";
import type { EdgeLearning, ModelVersion, TrainerKind, TrainingJob } from "../api/types";
import { CAN, useSession } from "../auth";
import { LineChart } from "../components/charts";
import { Badge, Empty, ErrorBox, Gate, ago, num, pct, useLoad, when } from "../components/ui";
import { Link, navigate } from "../router";
import { Compare } from "./ModelCompare";
import { decisionText, nearChance, triggerText } from "./modelFacts";

type Pending = { kind: "activate"; model: ModelVersion } | { kind: "rollback" };

const MAIN_METRICS = ["accuracy", "balanced_accuracy", "confident_coverage", "confident_accuracy"];

function isRate(name: string): boolean {
  return /accuracy|coverage|rate|precision|recall|f1/.test(name);
}

function metricText(name: string, value: unknown): string {
  if (typeof value !== "number") return value === null || value === undefined ? "–" : String(value);
  return isRate(name) ? pct(value) : num(value, 3);
}

export function ModelsPage({ detectorId }: { detectorId: string }) {
  const { client, me } = useSession();
  const detector = useLoad(() => client.detector(detectorId), [client, detectorId]);
  const models = useLoad(() => client.models(detectorId), [client, detectorId], 10_000);
  const jobs = useLoad(() => client.trainingJobs(detectorId), [client, detectorId], 3_000);
  const learning = useLoad(() => client.edgeLearning(detectorId), [client, detectorId], 60_000);
  const [picked, setPicked] = useState<number[]>([]);
  const [actionError, setActionError] = useState<unknown>(null);
  const [trainer, setTrainer] = useState<TrainerKind>("auto");
  const [pending, setPending] = useState<Pending | null>(null);
  const active = models.data?.find((m) => m.status === "active") ?? null;
  const canTrain = CAN.train(me.role);

  const act = async (action: () => Promise<unknown>) => {
    setActionError(null);
    setPending(null);
    try {
      await action();
      models.reload();
    } catch (err) {
      setActionError(err);
    }
  };

  const startJob = async () => {
    setActionError(null);
    try {
      const job = await client.startTraining(detectorId, trainer);
      navigate(`/training-jobs/${job.id}`);
    } catch (err) {
      setActionError(err);
    }
  };

  const toggle = (version: number) =>
    setPicked((current) => (current.includes(version) ? current.filter((v) => v !== version) : [...current.slice(-1), version]));

  return (
    <section aria-label="Models and training">
      <p className="crumbs">
        <Link to="/detectors">Detectors</Link> / <Link to={`/detectors/${detectorId}`}>{detector.data?.name ?? "…"}</Link> /
      </p>
      <div className="page-head">
        <h1>Models and training</h1>
        {canTrain && (
          <div className="row">
            <label>
              Trainer{" "}
              <select value={trainer} onChange={(e) => setTrainer(e.target.value as TrainerKind)} aria-label="Trainer">
                <option value="auto">
                  {detector.data?.mode === "BINARY" ? "auto (fast; an anomaly model while YES labels are too few)" : "auto (fast)"}
                </option>
                <option value="fast">fast (frozen features)</option>
                <option value="finetune">fine-tune</option>
                {detector.data?.mode === "BINARY" && <option value="anomaly">anomaly (from the good images only)</option>}
              </select>
            </label>
            <button type="button" className="primary" onClick={startJob}>
              Start training
            </button>
            <button type="button" onClick={() => setPending({ kind: "rollback" })} disabled={!active}>
              Roll back
            </button>
          </div>
        )}
      </div>
      {actionError !== null && <ErrorBox error={actionError} />}
      {pending && (
        <Confirm
          pending={pending}
          active={active}
          onCancel={() => setPending(null)}
          onConfirm={() =>
            act(() =>
              pending.kind === "activate" ? client.activateModel(detectorId, pending.model.version) : client.rollbackModel(detectorId),
            )
          }
        />
      )}

      <h2>Training jobs</h2>
      <Gate state={jobs} what="training jobs">
        {(list) => <JobList jobs={list} />}
      </Gate>

      <h2>Versions</h2>
      <Gate state={models} what="model versions">
        {(list) =>
          list.length === 0 ? (
            <Empty title="No model versions yet.">Label some images in the review queue, then start a training job.</Empty>
          ) : (
            <>
              <p className="muted">Tick two versions to compare them side by side.</p>
              <div className="table-wrap">
                <table className="table" data-testid="models-table">
                  <thead>
                    <tr>
                      <th>Compare</th>
                      <th>Version</th>
                      <th>Status</th>
                      <th>Trainer</th>
                      <th>Labels</th>
                      {MAIN_METRICS.map((m) => (
                        <th key={m}>{m.replaceAll("_", " ")}</th>
                      ))}
                      <th>Decision</th>
                      <th />
                    </tr>
                  </thead>
                  <tbody>
                    {[...list]
                      .sort((a, b) => b.version - a.version)
                      .map((model) => (
                        <tr key={model.id} data-version={model.version}>
                          <td>
                            <input type="checkbox" aria-label={`Compare v${model.version}`} checked={picked.includes(model.version)} onChange={() => toggle(model.version)} />
                          </td>
                          <td>
                            v{model.version}
                            <div className="muted small">{ago(model.created_at)}</div>
                          </td>
                          <td>
                            <Badge kind={model.status}>{model.status}</Badge>
                            {nearChance(model) && (
                              <div>
                                <Badge kind="warn">near chance</Badge>
                              </div>
                            )}
                          </td>
                          <td>{model.trainer}</td>
                          <td>{model.training_set_size ?? "–"}</td>
                          {MAIN_METRICS.map((m) => (
                            <td key={m}>{metricText(m, model.metrics[m])}</td>
                          ))}
                          <td className="small">{decisionText(model.decision, model.status)}</td>
                          <td>
                            {canTrain && model.status !== "active" && (
                              <button type="button" onClick={() => setPending({ kind: "activate", model })}>
                                Activate
                              </button>
                            )}
                          </td>
                        </tr>
                      ))}
                  </tbody>
                </table>
              </div>
              {picked.length === 2 && <Compare detectorId={detectorId} a={Math.min(...picked)} b={Math.max(...picked)} />}
              <GrowthChart models={list} />
            </>
          )
        }
      </Gate>

      <h2>Edges as labels grew</h2>
      <Gate state={learning} what="edge answer rate and accuracy">
        {(data) => <EdgeLearningCharts learning={data} />}
      </Gate>
    </section>
  );
}

function JobList({ jobs }: { jobs: TrainingJob[] }) {
  if (jobs.length === 0) return <Empty title="No training jobs yet.">Start one with “Start training”; jobs also start by themselves as labels arrive.</Empty>;
  return (
    <ul className="jobs">
      {[...jobs]
        .sort((a, b) => b.created_at.localeCompare(a.created_at))
        .slice(0, 8)
        .map((job) => (
          <li key={job.id}>
            <Link to={`/training-jobs/${job.id}`}>{job.id}</Link> <Badge kind={job.status}>{job.status}</Badge> {job.trainer}
            {job.status === "running" && <> · {pct(job.progress, 0)}</>}
            {job.model_version !== null && <> · produced v{job.model_version}</>}
            {job.trigger && <span className="muted"> · {triggerText(job.trigger)}</span>}
            <span className="muted"> · {when(job.created_at)}</span>
          </li>
        ))}
    </ul>
  );
}

/** Activate and roll back say first what will change, and warn about a version near chance. */
function Confirm({
  pending,
  active,
  onConfirm,
  onCancel,
}: {
  pending: Pending;
  active: ModelVersion | null;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const was = active ? `v${active.version}` : "no version";
  const warning = pending.kind === "activate" ? nearChance(pending.model) : null;
  return (
    <div className="card confirm" role="dialog" aria-label="Confirm model change">
      {pending.kind === "activate" ? (
        <p>
          <strong>Activate v{pending.model.version}?</strong> It replaces {was} as the active version: the edges download it
          at their next model refresh and answer with it from then on; {was} stays listed, so you can roll back.
        </p>
      ) : (
        <p>
          <strong>Roll back {was}?</strong> {was} is retired and the version that was active before it answers again; the
          edges switch at their next model refresh.
        </p>
      )}
      {warning && (
        <p className="notice error" role="alert">
          {warning}. Activating it makes the edges answer with it.
        </p>
      )}
      <div className="row">
        <button type="button" className="primary" onClick={onConfirm}>
          {pending.kind === "activate" ? `Yes, activate v${pending.model.version}` : "Yes, roll back"}
        </button>
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
      </div>
    </div>
  );
}

/**
 * What the edges did in the field, bucket by bucket: the share of queries they answered
 * themselves and how often their own answer matched a reviewer's label, next to the
 * number of labels the detector had by then.
 */
export function EdgeLearningCharts({ learning }: { learning: EdgeLearning }) {
  const buckets = learning.buckets;
  if (buckets.length === 0) {
    return (
      <Empty title="No edge data for this detector yet.">
        Edges report their answer counts every hour; accuracy appears once reviewers label queries an edge escalated or sent for audit.
      </Empty>
    );
  }
  const points = buckets.map((b) => ({ x: Date.parse(b.start), bucket: b }));
  const compared = buckets.reduce((sum, b) => sum + b.compared, 0);
  const timeLabel = (x: number) => {
    const d = new Date(x);
    return learning.bucket === "hour"
      ? d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23" })
      : d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
  };
  const per = learning.bucket === "hour" ? "hour" : "day";
  // A multiple of four keeps the chart's quarter ticks on whole labels.
  const labelsTop = Math.max(4, Math.ceil(Math.max(...buckets.map((b) => b.labels)) / 4) * 4);
  return (
    <div data-testid="edge-learning">
      <div className="charts">
        <LineChart
          title={`Edge answer rate and accuracy, per ${per}`}
          series={[
            { name: "answered on the edge (edge answers / queries)", color: "#2563eb", points: points.map((p) => ({ x: p.x, y: p.bucket.edge_answer_rate })) },
            { name: "edge answer agrees with the human label", color: "#16a34a", points: points.map((p) => ({ x: p.x, y: p.bucket.edge_accuracy })) },
          ]}
          yMax={1}
          yFormat={(v) => `${Math.round(v * 100)} %`}
          xLabel={timeLabel}
        />
        <LineChart
          title="Human labels in the training set"
          series={[{ name: "labels (cumulative)", color: "#7c3aed", points: points.map((p) => ({ x: p.x, y: p.bucket.labels })) }]}
          yMax={labelsTop}
          yFormat={(v) => String(Math.round(v))}
          xLabel={timeLabel}
        />
      </div>
      <p className="muted small">
        {compared === 0
          ? "No edge answer has a human label yet, so there is no accuracy to plot."
          : `Accuracy from ${compared} labeled edge answers. Escalations are the edge's least confident answers, so audits give the fairer picture.`}
      </p>
    </div>
  );
}

/**
 * Validation metrics of each version against its training-set size: what the trainer
 * measured on held-out labels, a forecast of the edge, not what the edges did.
 */function GrowthChart({ models }: { models: ModelVersion[] }) {
  const sorted = [...models].filter((m) => m.training_set_size !== null).sort((a, b) => (a.training_set_size ?? 0) - (b.training_set_size ?? 0));
  const series = (name: string, key: string, colour: string) => ({
    name,
    color: colour,
    points: sorted.map((m) => ({ x: m.training_set_size ?? 0, y: typeof m.metrics[key] === "number" ? (m.metrics[key] as number) : null })),
  });
  return (
    <LineChart
      title="Validation metrics of each version by training-set size"
      series={[
        series("confident coverage", "confident_coverage", "#2563eb"),
        series("confident accuracy", "confident_accuracy", "#16a34a"),
        series("balanced accuracy", "balanced_accuracy", "#d97706"),
      ]}
      yMax={1}
      yFormat={(v) => `${Math.round(v * 100)} %`}
      xTitle="labels in the training set"
    />
  );
}
