/**
 * The review queue: one large image at a time, answered from the keyboard.
 * The claim / preload / undo logic lives in review/session.ts; this page only shows the
 * session's snapshot and turns key presses into commands (review/keys.ts).
 */
import { useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import type { ReviewStats } from "../api/types";
import { useSession } from "../auth";
import { Badge, Empty, ErrorBox, Loading, REASONS, pct, useLoad } from "../components/ui";
import { cloudReviewBackend } from "../review/backend";
import { commandForKey, labelOptions, type ReviewCommand } from "../review/keys";
import { ReviewSession } from "../review/session";

/** Name of the performance measure from a key press to the next item on screen. */
export const WAIT_MEASURE = "io-review-wait";

export function ReviewPage() {
  const { client } = useSession();
  const [detectorId, setDetectorId] = useState<string>("");
  const [lastWait, setLastWait] = useState<number | null>(null);
  const pressedAt = useRef<number | null>(null);
  const stats = useLoad<ReviewStats>(() => client.reviewStats(), [client], 10_000);

  const session = useMemo(() => new ReviewSession(cloudReviewBackend(client)), [client]);
  useEffect(() => {
    // Closing the tab gives the claimed items back at once instead of when claims expire.
    const onHide = () => session.dispose();
    window.addEventListener("pagehide", onHide);
    return () => {
      window.removeEventListener("pagehide", onHide);
      session.dispose();
    };
  }, [session]);
  useEffect(() => session.start(detectorId || undefined), [session, detectorId]);
  const snap = useSyncExternalStore(session.subscribe, session.getSnapshot);
  const current = snap.current;
  // While the next item is being claimed (a few ms), the last one stays on screen, dimmed,
  // instead of flashing an empty frame.
  const lastShown = useRef(current);
  if (current) lastShown.current = current;
  if (snap.phase === "empty" || snap.phase === "error") lastShown.current = null;
  const shown = current ?? (snap.phase === "loading" ? lastShown.current : null);

  const run = (command: ReviewCommand) => {
    pressedAt.current = performance.now();
    if (command.kind === "label") session.label(command.label);
    else if (command.kind === "skip") session.skip();
    else void session.undo();
  };

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      const target = event.target as HTMLElement | null;
      const command = commandForKey(
        {
          key: event.key,
          repeat: event.repeat,
          ctrlKey: event.ctrlKey,
          metaKey: event.metaKey,
          altKey: event.altKey,
          targetTag: target?.tagName,
          targetEditable: target?.isContentEditable,
        },
        current?.item ?? null,
      );
      if (!command) return;
      event.preventDefault();
      run(command);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  });

  // Time from the key press to the next item painted: the wait a reviewer feels.
  const shownId = current?.item.id;
  useEffect(() => {
    const start = pressedAt.current;
    if (start === null || !shownId) return;
    pressedAt.current = null;
    const frame = requestAnimationFrame(() => {
      const end = performance.now();
      performance.measure(WAIT_MEASURE, { start, end, detail: shownId });
      setLastWait(end - start);
    });
    return () => cancelAnimationFrame(frame);
  }, [shownId]);

  const detectors = stats.data?.per_detector ?? [];
  const options = shown ? labelOptions(shown.item) : [];
  const answer = shown?.item.edge_answer;
  const waiting = !current || snap.busy;

  return (
    <section className="review" aria-label="Review queue">
      <div className="review-bar">
        <label>
          Detector{" "}
          <select value={detectorId} onChange={(event) => setDetectorId(event.target.value)} aria-label="Detector filter">
            <option value="">All detectors ({stats.data?.total_pending ?? "…"} waiting)</option>
            {detectors.map((d) => (
              <option key={d.detector_id} value={d.detector_id}>
                {d.detector_name} ({d.pending})
              </option>
            ))}
          </select>
        </label>
        <span className="counter" data-testid="remaining">
          <strong>{snap.remaining ?? "…"}</strong> waiting
          {snap.ahead + (current ? 1 : 0) > 0 && <> · {snap.ahead + (current ? 1 : 0)} claimed by you</>}
        </span>
        <span className="muted">
          {snap.labeled} labeled · {snap.skipped} skipped
          {lastWait !== null && <> · next item in {Math.round(lastWait)} ms</>}
        </span>
      </div>

      {snap.error && <ErrorBox error={new Error(snap.error)} />}

      {snap.phase === "loading" && !shown && <Loading what="the next item" />}
      {snap.phase === "empty" && (
        <Empty title="Nothing waits for review.">
          New escalations appear here by themselves (checked every few seconds).
          {snap.canUndo && " Press Z to undo your last label."}
        </Empty>
      )}

      {shown && (
        <div
          className={`review-main${current ? "" : " stale"}`}
          aria-busy={!current}
          data-item-id={current?.item.id}
          data-image-query-id={current?.item.image_query_id}
        >
          <div className="review-image">
            {shown.imageUrl ? (
              <img src={shown.imageUrl} alt={`Image of ${shown.item.image_query_id}`} />
            ) : (
              <div className="notice error">{shown.imageError}</div>
            )}
          </div>
          <aside className="review-side">
            <p className="detector-name">{shown.item.detector_name}</p>
            <h2 className="question">{shown.item.query}</h2>
            <dl>
              <dt>Edge answer</dt>
              <dd>
                {answer?.label ? (
                  <>
                    <Badge kind="answer">{answer.label}</Badge> at {pct(answer.confidence)} confidence
                    {answer.from_edge ? " (edge)" : answer.source ? ` (${answer.source})` : ""}
                  </>
                ) : (
                  "none"
                )}
              </dd>
              <dt>Why it is here</dt>
              <dd>
                <Badge kind={shown.item.reason}>{shown.item.reason.replaceAll("_", " ")}</Badge>
                <span className="muted"> {REASONS[shown.item.reason] ?? ""}</span>
              </dd>
              <dt>Image query</dt>
              <dd className="mono">{shown.item.image_query_id}</dd>
            </dl>
            <div className="answers" role="group" aria-label="Answers">
              {options.map((option) => (
                <button
                  type="button"
                  key={option.label}
                  className="answer"
                  disabled={waiting}
                  onClick={() => run({ kind: "label", label: option.label })}
                >
                  <kbd>{option.key}</kbd> {option.title}
                </button>
              ))}
            </div>
            <div className="answers secondary">
              <button type="button" disabled={waiting} onClick={() => run({ kind: "skip" })}>
                <kbd>S</kbd> Skip
              </button>
              <button type="button" disabled={!snap.canUndo} onClick={() => run({ kind: "undo" })}>
                <kbd>Z</kbd> Undo last
              </button>
            </div>
            {snap.lastAction && (
              <p className="muted" role="status">
                {snap.lastAction}
              </p>
            )}
          </aside>
        </div>
      )}
    </section>
  );
}
