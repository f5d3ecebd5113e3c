import { describe, expect, it } from "vitest";
import {
  addBox,
  applyBoxAction,
  boxAt,
  confirmLabel,
  currentCount,
  type EditorState,
  initialState,
  isDrawable,
  moved,
  resized,
  spanned,
} from "./boxes";
import { commandForKey, labelOptions, modelAnswer } from "./keys";

const boxes = { mode: "BOUNDING_BOX", class_names: ["bolt"], mode_configuration: { class_name: "bolt", max_num_bboxes: 3 } };
const counting = { mode: "COUNT", class_names: ["bolt"], mode_configuration: { class_name: "bolt", max_count: 20 } };
const modelRois = [
  { label: "bolt", score: 0.8, geometry: { left: 0.1, top: 0.1, right: 0.3, bottom: 0.3 } },
  { label: "bolt", score: 0.6, geometry: { left: 0.5, top: 0.5, right: 0.9, bottom: 0.7 } },
];

describe("box editing", () => {
  it("starts from the model's boxes, so Enter confirms them unchanged", () => {
    const state = initialState(modelRois);
    expect(state.boxes).toEqual(modelRois.map((roi) => roi.geometry));
    expect(state.selected).toBeNull();
    expect(confirmLabel(boxes, state)).toEqual({
      label: "BOUNDING_BOX",
      rois: modelRois.map((roi) => ({ label: "bolt", score: 1, geometry: roi.geometry })),
    });
    expect(initialState(null).boxes).toEqual([]);
  });

  it("draws a box from any two corners, clamped to the image, and ignores a click", () => {
    expect(spanned({ x: 0.6, y: 0.8 }, { x: 0.2, y: 0.4 })).toEqual({ left: 0.2, top: 0.4, right: 0.6, bottom: 0.8 });
    expect(spanned({ x: -0.2, y: 0.5 }, { x: 1.4, y: 0.6 })).toEqual({ left: 0, top: 0.5, right: 1, bottom: 0.6 });
    expect(isDrawable(spanned({ x: 0.5, y: 0.5 }, { x: 0.502, y: 0.6 }))).toBe(false);
    const drawn = addBox(initialState(modelRois), spanned({ x: 0.4, y: 0.1 }, { x: 0.45, y: 0.2 }));
    expect(drawn.boxes).toHaveLength(3);
    expect(drawn.selected).toBe(2);
  });

  it("moves a box without letting it leave the image and resizes from a corner", () => {
    const box = { left: 0.7, top: 0.1, right: 0.9, bottom: 0.3 };
    const right = moved(box, 0.5, 0);
    expect(right.left).toBeCloseTo(0.8);
    expect(right.right).toBeCloseTo(1);
    const up = moved(box, 0, -0.5);
    expect(up.top).toBe(0);
    expect(up.bottom).toBeCloseTo(0.2);
    expect(resized(box, "nw", { x: 0.5, y: 0.05 })).toEqual({ left: 0.5, top: 0.05, right: 0.9, bottom: 0.3 });
    // Dragged past the opposite corner: the box flips instead of turning inside out.
    expect(resized(box, "se", { x: 0.6, y: 0.0 })).toEqual({ left: 0.6, top: 0, right: 0.7, bottom: 0.1 });
  });

  it("picks the smallest box under the pointer, so a box inside another can be taken", () => {
    const nested = [{ left: 0, top: 0, right: 1, bottom: 1 }, { left: 0.4, top: 0.4, right: 0.6, bottom: 0.6 }];
    expect(boxAt(nested, { x: 0.5, y: 0.5 })).toBe(1);
    expect(boxAt(nested, { x: 0.1, y: 0.1 })).toBe(0);
    expect(boxAt(nested.slice(1), { x: 0.1, y: 0.1 })).toBeNull();
  });

  it("deletes, cycles, nudges and adds boxes by key", () => {
    let state: EditorState = initialState(modelRois);
    state = applyBoxAction(state, { kind: "cycle", step: 1 });
    expect(state.selected).toBe(0);
    state = applyBoxAction(state, { kind: "cycle", step: -1 });
    expect(state.selected).toBe(1);
    state = applyBoxAction(state, { kind: "nudge", dx: -0.05, dy: 0.1 });
    expect(state.boxes[1].left).toBeCloseTo(0.45);
    expect(state.boxes[1].bottom).toBeCloseTo(0.8);
    state = applyBoxAction(state, { kind: "delete" });
    expect(state.boxes).toEqual([modelRois[0].geometry]);
    expect(state.selected).toBe(0);
    state = applyBoxAction(state, { kind: "delete" });
    expect(state.boxes).toEqual([]);
    expect(state.selected).toBeNull();
    expect(confirmLabel(boxes, state)).toEqual({ label: "NO_OBJECTS" });
    state = applyBoxAction(state, { kind: "new" });
    expect(state.boxes).toEqual([{ left: 0.4, top: 0.4, right: 0.6, bottom: 0.6 }]);
    expect(applyBoxAction(state, { kind: "deselect" }).selected).toBeNull();
  });

  it("counts the boxes unless a count was typed, and sends boxes only when they match it", () => {
    let state = initialState(modelRois);
    expect(currentCount(state)).toBe(2);
    expect(confirmLabel(counting, state)).toEqual({ label: "2", rois: expect.any(Array) });
    state = applyBoxAction(state, { kind: "digit", digit: "1" });
    state = applyBoxAction(state, { kind: "digit", digit: "2" });
    expect(currentCount(state)).toBe(12);
    expect(confirmLabel(counting, state)).toEqual({ label: "12" });
    // Backspace with no box selected takes back a digit; with one selected it deletes the box.
    state = applyBoxAction(state, { kind: "delete" });
    expect(state.typedCount).toBe("1");
    expect(state.boxes).toHaveLength(2);
    state = applyBoxAction(applyBoxAction(state, { kind: "cycle", step: 1 }), { kind: "delete" });
    expect(state.boxes).toHaveLength(1);
    const one = confirmLabel(counting, state);
    expect(one.label).toBe("1");
    expect(one.rois?.map((roi) => roi.geometry)).toEqual([modelRois[1].geometry]);
    expect(confirmLabel(counting, applyBoxAction(state, { kind: "digit", digit: "0" })).label).toBe("10");
    expect(confirmLabel(counting, initialState([])).label).toBe("0");
  });
});

describe("box-mode keys", () => {
  it("confirms with Enter, edits boxes by key and leaves the binary keys alone", () => {
    expect(commandForKey({ key: "Enter" }, boxes)).toEqual({ kind: "confirm" });
    expect(commandForKey({ key: "Delete" }, boxes)).toEqual({ kind: "box", action: { kind: "delete" } });
    expect(commandForKey({ key: "Backspace" }, counting)).toEqual({ kind: "box", action: { kind: "delete" } });
    expect(commandForKey({ key: "Tab", shiftKey: true }, boxes)).toEqual({ kind: "box", action: { kind: "cycle", step: -1 } });
    expect(commandForKey({ key: "n" }, boxes)).toEqual({ kind: "box", action: { kind: "new" } });
    expect(commandForKey({ key: "u" }, boxes)).toEqual({ kind: "label", label: "UNCLEAR" });
    expect(commandForKey({ key: "g" }, boxes)).toEqual({ kind: "label", label: "GREATER_THAN_MAX" });
    expect(commandForKey({ key: "g" }, counting)).toBeNull();
    expect(commandForKey({ key: "7" }, counting)).toEqual({ kind: "box", action: { kind: "digit", digit: "7" } });
    expect(commandForKey({ key: "7" }, boxes)).toBeNull();
    expect(commandForKey({ key: "y" }, boxes)).toBeNull();
    expect(labelOptions(counting).map((o) => o.label)).toEqual(["UNCLEAR"]);
    // A held arrow key moves the box on; a held Enter does not label twice.
    expect(commandForKey({ key: "ArrowLeft", repeat: true, shiftKey: true }, boxes)).toEqual({
      kind: "box",
      action: { kind: "nudge", dx: -0.05, dy: 0 },
    });
    expect(commandForKey({ key: "Enter", repeat: true }, boxes)).toBeNull();
    expect(commandForKey({ key: "Enter" }, { mode: "BINARY", class_names: null })).toBeNull();
    expect(commandForKey({ key: "ArrowLeft" }, { mode: "BINARY", class_names: null })).toBeNull();
    expect(commandForKey({ key: "Enter", targetTag: "INPUT" }, counting)).toBeNull();
  });

  it("leaves A to Enter: a box answer is confirmed with its boxes on screen", () => {
    expect(modelAnswer({ ...boxes, edge_answer: { label: "BOUNDING_BOX" } })).toBeNull();
  });
});
