/** A training job, live: progress, ETA, per-epoch loss and accuracy, cancel, and the promotion decision. */
import { useState } from "react";
import { CAN, useSession } from "../auth";
import { LineChart, ProgressBar } from "../components/charts";
import { Badge, ErrorBox, Gate, duration, useLoad, when } from "../components/ui";
import { Link } from "../router";
import { decisionText, nearChance, smoothedEta, triggerText } from "./modelFacts";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

export function TrainingJobPage({ jobId }: { jobId: string }) {
  const { client, me } = useSession();
  const [finished, setFinished] = useState(false);
  const job = useLoad(
    async () => {
      const value = await client.trainingJob(jobId);
      setFinished(FINISHED.has(value.status));
      return value;
    },
    [client, jobId],
    finished ? undefined : 1_000,
  );
  const [error, setError] = useState<unknown>(null);
  const detectorId = job.data?.detector_id;
  const producedVersion = job.data?.model_version ?? null;
  const detector = useLoad(async () => (detectorId ? client.detector(detectorId) : null), [client, detectorId]);
  const models = useLoad(async () => (detectorId && producedVersion !== null ? client.models(detectorId) : []), [client, detectorId, producedVersion]);
  const produced = models.data?.find((m) => m.version === producedVersion) ?? null;

  const cancel = async () => {
    setError(null);
    try {
      await client.cancelTrainingJob(jobId);
      job.reload();
    } catch (err) {
      setError(err);
    }
  };

  return (
    <section aria-label="Training job">
      <Gate state={job} what="the training job">
        {(j) => (
          <>
            <p className="crumbs">
              <Link to="/detectors">Detectors</Link> /{" "}
              <Link to={`/detectors/${j.detector_id}`}>{detector.data?.name ?? "…"}</Link> /{" "}
              <Link to={`/detectors/${j.detector_id}/models`}>Models</Link> /
            </p>
            <div className="page-head">
              <h1>
                Training job <span className="mono">{j.id}</span>
              </h1>
              {CAN.train(me.role) && !FINISHED.has(j.status) && (
                <button type="button" className="danger" onClick={cancel}>
                  Cancel job
                </button>
              )}
            </div>
            {error !== null && <ErrorBox error={error} />}
            <p>
              <Badge kind={j.status}>{j.status}</Badge> trainer <strong>{j.trainer}</strong>
              {j.trigger && <> · {triggerText(j.trigger)}</>} · created {when(j.created_at)}
            </p>
            <ProgressBar value={j.progress} label="Training progress" />
            <p data-testid="job-status">
              {j.status === "queued" && "Waiting for a training worker to pick it up."}
              {j.status === "running" && <RunningEta progress={j.progress} startedAt={j.started_at} reported={j.eta_s} />}
              {j.status === "succeeded" && (
                <>
                  Done in {duration(j.started_at && j.finished_at ? (Date.parse(j.finished_at) - Date.parse(j.started_at)) / 1000 : null)}
                  {j.model_version !== null && <> · produced model v{j.model_version}</>}.
                </>
              )}
              {j.status === "failed" && <>Failed: {j.error ?? "no reason given"}. Check the worker log, then start a new job.</>}
              {j.status === "cancelled" && "Cancelled."}
              {j.message && <span className="muted"> {j.message}</span>}
            </p>
            {produced && (
              <p className={`notice ${produced.status === "active" ? "" : "error"}`} data-testid="job-decision">
                <strong>
                  v{produced.version} {produced.status === "active" ? "is active" : `is not active (${produced.status})`}
                </strong>
                <span>Promotion decision: {decisionText(produced.decision, produced.status)}</span>
                {nearChance(produced) && <span>{nearChance(produced)}.</span>}
              </p>
            )}
            <div className="charts">
              <LineChart
                title="Loss per epoch"
                series={[{ name: "loss", color: "#dc2626", points: j.epochs.map((e) => ({ x: e.epoch, y: e.loss })) }]}
                yFormat={(v) => v.toFixed(2)}
                xTitle="epoch"
              />
              <LineChart
                title="Accuracy per epoch"
                series={[
                  { name: "training accuracy", color: "#2563eb", points: j.epochs.map((e) => ({ x: e.epoch, y: e.accuracy })) },
                  { name: "validation accuracy", color: "#16a34a", points: j.epochs.map((e) => ({ x: e.epoch, y: e.val_accuracy })) },
                ]}
                yMax={1}
                yFormat={(v) => `${Math.round(v * 100)} %`}
                xTitle="epoch"
              />
            </div>
          </>
        )}
      </Gate>
    </section>
  );
}

function RunningEta({ progress, startedAt, reported }: { progress: number; startedAt: string | null; reported: number | null }) {
  const eta = smoothedEta(progress, startedAt, Date.now(), reported);
  return eta === null ? <>Estimating the time left…</> : <>About {duration(eta)} left.</>;
}
