/**
 * The answer side of a COUNT / BOUNDING_BOX item: how many boxes there are, the count the
 * label will carry (typed over the number of boxes for COUNT), and Enter to confirm.
 */
import type { ReviewItem } from "../api/types";
import { confirmLabel, currentCount, type EditorState, maxObjects, typeCount } from "./boxes";

interface Props {
  item: ReviewItem;
  state: EditorState;
  onChange: (change: (state: EditorState) => EditorState) => void;
  onConfirm: () => void;
  disabled: boolean;
}

function boxes(n: number): string {
  return n === 1 ? "1 box" : `${n} boxes`;
}

export function BoxAnswers({ item, state, onChange, onConfirm, disabled }: Props) {
  const counting = item.mode.toUpperCase() === "COUNT";
  const limit = maxObjects(item);
  const count = currentCount(state);
  const answer = confirmLabel(item, state);
  const confirmTitle = counting ? `Count ${count}` : answer.label === "NO_OBJECTS" ? "No objects" : boxes(state.boxes.length);
  const over = (counting ? count : state.boxes.length) > limit;
  return (
    <div className="box-answers" role="group" aria-label="Boxes">
      <p className="box-count" data-testid="box-count">
        <strong>{boxes(state.boxes.length)}</strong>
        {counting && state.typedCount !== "" && <> · count typed: {state.typedCount}</>}
        <span className="muted"> (at most {limit})</span>
      </p>
      {counting && (
        <label className="count-input">
          Count{" "}
          <input
            data-testid="count-input"
            inputMode="numeric"
            autoComplete="off"
            size={3}
            value={state.typedCount}
            placeholder={String(state.boxes.length)}
            aria-label="Count"
            onChange={(event) => {
              const text = event.target.value;
              onChange((old) => typeCount(old, text));
            }}
            onKeyDown={(event) => {
              if (event.key === "Enter") {
                event.preventDefault();
                event.currentTarget.blur();
                onConfirm();
              } else if (event.key === "Escape") event.currentTarget.blur();
            }}
          />
        </label>
      )}
      {over && (
        <p className="notice error small" data-testid="over-max">
          More than this detector's maximum of {limit}: the cloud will refuse it.
        </p>
      )}
      <button type="button" className="answer confirm" disabled={disabled} onClick={onConfirm} data-testid="confirm">
        <kbd>Enter</kbd> Confirm: {confirmTitle}
      </button>
      <p className="muted small box-help">
        Drag on the image: new box · drag a box: move · drag a corner: resize · <kbd>Del</kbd> delete ·{" "}
        <kbd>Tab</kbd> next box · arrows move it · <kbd>N</kbd> new box{counting ? " · digits type the count" : ""} ·{" "}
        <kbd>Shift</kbd>+drag pans
      </p>
    </div>
  );
}
