/**
 * The review queue: one large image at a time, answered from the keyboard.
 * The claim / preload / undo logic lives in review/session.ts; this page only shows the
 * session's snapshot and turns key presses into commands (review/keys.ts).
 */
import { useCallback, useEffect, useMemo, useRef, useState, useSyncExternalStore } from "react";
import type { ReviewStats } from "../api/types";
import { useSession } from "../auth";
import { Empty, Loading, useLoad } from "../components/ui";
import { ImageViewer, INITIAL_VIEW, type ViewState, zoomAt } from "../review/ImageViewer";
import { BoxAnswers } from "../review/BoxAnswers";
import { BoxEditor } from "../review/BoxEditor";
import { applyBoxAction, className, confirmLabel, isBoxMode } from "../review/boxes";
import { PredictionPanel } from "../review/PredictionPanel";
import { SignInAgain } from "../review/SignInAgain";
import { cloudReviewBackend } from "../review/backend";
import { useItemDetails } from "../review/details";
import { DepthHint, useDepthView } from "../review/DepthView";
import { commandForKey, labelOptions, modelAnswer, type ReviewCommand, type ViewAction } from "../review/keys";
import { ReviewSession } from "../review/session";
import { useBoxEditor } from "../review/useBoxEditor";

/** Name of the performance measure from a key press to the next item on screen. */
export const WAIT_MEASURE = "io-review-wait";

function applyView(view: ViewState, action: ViewAction): ViewState {
  if (action === "zoomIn") return zoomAt(view, view.zoom * 1.5, { x: 0, y: 0 });
  if (action === "zoomOut") return zoomAt(view, view.zoom / 1.5, { x: 0, y: 0 });
  if (action === "reset") return { ...view, zoom: 1, x: 0, y: 0 };
  if (action === "smooth") return { ...view, smooth: !view.smooth };
  return { ...view, overlay: !view.overlay };
}

export function ReviewPage() {
  const { client, signInAgain } = useSession();
  const [detectorId, setDetectorId] = useState<string>("");
  const [lastWait, setLastWait] = useState<number | null>(null);
  const [view, setView] = useState<ViewState>(INITIAL_VIEW);
  const onView = useCallback((update: (old: ViewState) => ViewState) => setView(update), []);
  const pressedAt = useRef<number | null>(null);
  /** Whether the next item was in memory when the key was pressed (else it waited for a claim). */
  const nextInMemory = useRef(false);
  // Per-detector counts move with every label (this reviewer's and others'): poll them often.
  const stats = useLoad<ReviewStats>(() => client.reviewStats(), [client], 3_000);

  // One session for the page's life: after signing in again it goes on with the new client
  // (read through the ref) and sends the labels that waited.
  const clientRef = useRef(client);
  clientRef.current = client;
  const session = useMemo(() => new ReviewSession(cloudReviewBackend(() => clientRef.current)), []);
  useEffect(() => session.resume(), [session, client]);
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
  const details = useItemDetails(client, current?.item ?? null, shown?.item.detector_id);
  const overlaySrc = useOverlay(details, view.overlay);
  const [depthOn, setDepthOn] = useState(false);
  const depth = useDepthView(client, current?.item.image_query_id, depthOn);
  const [boxes, editBoxes] = useBoxEditor(current);
  const editing = current !== null && isBoxMode(current.item);

  const run = (command: ReviewCommand) => {
    if (command.kind === "view") {
      if (command.action === "depth") setDepthOn((on) => !on);
      else setView((old) => applyView(old, command.action));
      return;
    }
    if (command.kind === "box") {
      editBoxes((old) => applyBoxAction(old, command.action));
      return;
    }
    pressedAt.current = performance.now();
    if (command.kind === "confirm") {
      if (!current || !editing) return;
      const answer = confirmLabel(current.item, boxes);
      session.label(answer.label, answer.rois);
    } else if (command.kind === "label") session.label(command.label);
    else if (command.kind === "skip") session.skip();
    else void session.undo();
    nextInMemory.current = session.getSnapshot().current !== null;
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
          shiftKey: event.shiftKey,
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
      performance.measure(WAIT_MEASURE, { start, end, detail: { item: shownId, inMemory: nextInMemory.current } });
      setLastWait(end - start);
    });
    return () => cancelAnimationFrame(frame);
  }, [shownId]);

  const detectors = stats.data?.per_detector ?? [];
  const options = shown ? labelOptions(shown.item) : [];
  const accept = shown ? modelAnswer(shown.item) : null;
  const waiting = !current || snap.busy || snap.signInNeeded;
  const held = snap.ahead + (current ? 1 : 0);
  const done = snap.labeled + snap.skipped;
  const total = snap.remaining === null ? null : done + held + snap.remaining;

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
        {current && total !== null && (
          <span className="progress-count" data-testid="progress">
            Item <strong>{Math.min(done + 1, total)}</strong> of <strong>{total}</strong>
          </span>
        )}
        <span className="counter" data-testid="remaining">
          <strong>{snap.remaining ?? "…"}</strong> waiting
          {held > 0 && <> · {held} claimed by you</>}
        </span>
        <span className="muted">
          {snap.labeled} labeled · {snap.skipped} skipped
          {snap.unsaved > 0 && <span data-testid="unsaved"> · {snap.unsaved} saving</span>}
          {lastWait !== null && <> · next item in {Math.round(lastWait)} ms</>}
        </span>
      </div>

      {snap.signInNeeded && <SignInAgain unsaved={snap.unsaved} onSignIn={signInAgain} />}
      {/* An unsaved item on screen says so itself (over the image on a phone, where a banner here
          would push the answer buttons out of reach). */}
      {snap.error && !snap.signInNeeded && !current?.failure && (
        <div className="notice error" role="alert" data-testid="review-error">
          {snap.error}
        </div>
      )}

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
              <ImageViewer
                src={depth.src ?? shown.imageUrl}
                alt={`${depth.src ? "Depth map" : "Image"} of ${shown.item.image_query_id}`}
                view={view}
                onView={onView}
                overlaySrc={overlaySrc}
                rois={editing ? null : details.iq?.id === shown.item.image_query_id ? details.iq.rois : null}
              >
                {editing && <BoxEditor state={boxes} onChange={(next) => editBoxes(() => next)} className={className(current.item)} />}
              </ImageViewer>
            ) : (
              <div className="notice error">{shown.imageError}</div>
            )}
            <div className="viewer-hint small">
              {view.zoom > 1 ? `${view.zoom.toFixed(1)}× · ` : ""}wheel / pinch zoom · {editing ? "Shift+drag" : "drag"} to pan · <kbd>R</kbd> reset ·{" "}
              <kbd>M</kbd> {view.smooth ? "smooth" : "pixels"} · <kbd>O</kbd> overlay {view.overlay ? "on" : "off"} ·{" "}
              <DepthHint state={depth.state} />
            </div>
          </div>
          {shown.failure && (
            <div className="notice error item-failure" role="alert" data-testid="item-failure">
              <strong>
                Your answer {shown.failure.label} was NOT saved
              </strong>
              <span>{shown.failure.message}. Answer it again.</span>
            </div>
          )}
          <aside className="review-side">
            <p className="detector-name">{shown.item.detector_name}</p>
            <h2 className="question">{shown.item.query}</h2>
            {editing && (
              <BoxAnswers item={current.item} state={boxes} onChange={editBoxes} onConfirm={() => run({ kind: "confirm" })} disabled={waiting} />
            )}
            <div className="answers" role="group" aria-label="Answers">
              {options.map((option) => (
                <button
                  type="button"
                  key={option.label}
                  className={`answer${option.label === accept ? " suggested" : ""}`}
                  disabled={waiting}
                  onClick={() => run({ kind: "label", label: option.label })}
                >
                  <kbd>{option.key}</kbd> {option.title}
                </button>
              ))}
            </div>
            <div className="answers secondary">
              {accept && (
                <button type="button" disabled={waiting} onClick={() => run({ kind: "label", label: accept })}>
                  <kbd>A</kbd> Accept {accept}
                </button>
              )}
              <button type="button" disabled={waiting} onClick={() => run({ kind: "skip" })}>
                <kbd>S</kbd> Skip
              </button>
              <button type="button" disabled={!snap.canUndo} onClick={() => run({ kind: "undo" })}>
                <kbd>Z</kbd> Undo last
              </button>
            </div>
            {snap.lastAction && (
              <p className="muted" role="status" data-testid="last-action">
                {snap.lastAction}
              </p>
            )}
            <PredictionPanel item={shown.item} details={details} />
          </aside>
        </div>
      )}
    </section>
  );
}

/**
 * The heat map over the image, where this cloud serves overlays and the detector's active
 * model is an anomaly model (the route runs it again on the image and refuses any other kind).
 */
function useOverlay(details: ReturnType<typeof useItemDetails>, on: boolean): string | null {
  const { client } = useSession();
  const [url, setUrl] = useState<string | null>(null);
  const iqId = on && details.overlayRoute && details.activeKind === "anomaly" ? details.iq?.id : undefined;
  useEffect(() => {
    setUrl(null);
    if (!iqId) return;
    let live = true;
    let made: string | null = null;
    client.imageObjectUrl(client.overlayPath(iqId, "heatmap")).then(
      (objectUrl) => {
        made = objectUrl;
        if (live) setUrl(objectUrl);
        else URL.revokeObjectURL(objectUrl);
      },
      () => undefined, // no heat map for this query: the boxes alone are drawn
    );
    return () => {
      live = false;
      if (made) URL.revokeObjectURL(made);
    };
  }, [client, iqId]);
  return url;
}
