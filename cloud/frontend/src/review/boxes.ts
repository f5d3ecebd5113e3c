/**
 * Box editing for COUNT and BOUNDING_BOX review items, as plain functions (no DOM), so
 * drawing, moving, deleting and the label they make can be tested without a browser.
 *
 * Boxes are in image fractions (0..1), as the cloud stores them. The editor starts from the
 * model's boxes (pre-labels): when they are right, Enter confirms them as they are.
 */
import type { Roi, RoiRequest } from "../api/types";
import type { BoxAction } from "./keys";

export interface Box {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

export interface Point {
  x: number;
  y: number;
}

export type Corner = "nw" | "ne" | "sw" | "se";

export interface EditorState {
  boxes: Box[];
  /** Index of the selected box, or null. */
  selected: number | null;
  /** Digits the reviewer typed for a COUNT item ("" = none: the count is the number of boxes). */
  typedCount: string;
}

/** Boxes smaller than this (a click rather than a drag) are not drawn. */
export const MIN_SIZE = 0.01;
const MAX_COUNT_DIGITS = 2;

export interface BoxDetector {
  mode: string;
  mode_configuration?: { class_name?: string; max_count?: number; max_num_bboxes?: number } | null;
  class_names?: string[] | null;
}

export function isBoxMode(item: { mode: string }): boolean {
  const mode = item.mode.toUpperCase();
  return mode === "COUNT" || mode === "BOUNDING_BOX";
}

/** The class every box of this detector gets (the cloud's class_name). */
export function className(item: BoxDetector): string {
  return item.mode_configuration?.class_name ?? item.class_names?.[0] ?? "object";
}

/** The detector's max_count or max_num_bboxes (the SDK's default 10 when unset). */
export function maxObjects(item: BoxDetector): number {
  const config = item.mode_configuration ?? {};
  return (item.mode.toUpperCase() === "COUNT" ? config.max_count : config.max_num_bboxes) ?? 10;
}

const clamp = (value: number) => Math.min(1, Math.max(0, value));

export function initialState(rois: Roi[] | null | undefined): EditorState {
  return {
    boxes: (rois ?? []).map(({ geometry: g }) => ({ left: g.left, top: g.top, right: g.right, bottom: g.bottom })),
    selected: null,
    typedCount: "",
  };
}

/** The box spanned by two points, clamped to the image. */
export function spanned(a: Point, b: Point): Box {
  return {
    left: clamp(Math.min(a.x, b.x)),
    top: clamp(Math.min(a.y, b.y)),
    right: clamp(Math.max(a.x, b.x)),
    bottom: clamp(Math.max(a.y, b.y)),
  };
}

export function isDrawable(box: Box): boolean {
  return box.right - box.left >= MIN_SIZE && box.bottom - box.top >= MIN_SIZE;
}

/** `box` moved by (dx, dy), kept whole inside the image. */
export function moved(box: Box, dx: number, dy: number): Box {
  const w = box.right - box.left;
  const h = box.bottom - box.top;
  const left = Math.min(1 - w, Math.max(0, box.left + dx));
  const top = Math.min(1 - h, Math.max(0, box.top + dy));
  return { left, top, right: left + w, bottom: top + h };
}

/** `box` with `corner` dragged to `to`; the opposite corner stays put. */
export function resized(box: Box, corner: Corner, to: Point): Box {
  const fixed = {
    x: corner.endsWith("w") ? box.right : box.left,
    y: corner.startsWith("n") ? box.bottom : box.top,
  };
  return spanned(fixed, to);
}

/** The box under `point`: the smallest one, so a box inside another can still be picked. */
export function boxAt(boxes: Box[], point: Point): number | null {
  let best: number | null = null;
  let bestArea = Infinity;
  boxes.forEach((box, index) => {
    const inside = point.x >= box.left && point.x <= box.right && point.y >= box.top && point.y <= box.bottom;
    const area = (box.right - box.left) * (box.bottom - box.top);
    if (inside && area < bestArea) {
      best = index;
      bestArea = area;
    }
  });
  return best;
}

export function addBox(state: EditorState, box: Box): EditorState {
  return { ...state, boxes: [...state.boxes, box], selected: state.boxes.length };
}

export function replaceBox(state: EditorState, index: number, box: Box): EditorState {
  return { ...state, boxes: state.boxes.map((old, i) => (i === index ? box : old)), selected: index };
}

export function removeSelected(state: EditorState): EditorState {
  if (state.selected === null) return state;
  const boxes = state.boxes.filter((_, i) => i !== state.selected);
  return { ...state, boxes, selected: boxes.length ? Math.min(state.selected, boxes.length - 1) : null };
}

/** Tab / Shift+Tab: the next or previous box, wrapping around. */
export function cycle(state: EditorState, step: 1 | -1): EditorState {
  const n = state.boxes.length;
  if (!n) return state;
  const selected = state.selected === null ? (step > 0 ? 0 : n - 1) : (state.selected + step + n) % n;
  return { ...state, selected };
}

export function nudgeSelected(state: EditorState, dx: number, dy: number): EditorState {
  if (state.selected === null) return state;
  return replaceBox(state, state.selected, moved(state.boxes[state.selected], dx, dy));
}

/** N: a box in the middle of the image, selected, for the arrow keys to move. */
export function newBox(state: EditorState): EditorState {
  return addBox(state, { left: 0.4, top: 0.4, right: 0.6, bottom: 0.6 });
}

/** A typed digit; "" clears. Leading zeros are dropped ("07" is 7). */
export function typeCount(state: EditorState, text: string): EditorState {
  const digits = text.replace(/\D/g, "").slice(-MAX_COUNT_DIGITS).replace(/^0+(?=\d)/, "");
  return { ...state, typedCount: digits };
}

/** A key's edit. Backspace with no box selected takes back the last typed digit. */
export function applyBoxAction(state: EditorState, action: BoxAction): EditorState {
  switch (action.kind) {
    case "delete":
      if (state.selected === null) return typeCount(state, state.typedCount.slice(0, -1));
      return removeSelected(state);
    case "cycle":
      return cycle(state, action.step);
    case "nudge":
      return nudgeSelected(state, action.dx, action.dy);
    case "new":
      return newBox(state);
    case "deselect":
      return { ...state, selected: null };
    case "digit":
      return typeCount(state, state.typedCount + action.digit);
  }
}

/** The count the label will carry: the typed one, else the number of boxes. */
export function currentCount(state: EditorState): number {
  return state.typedCount === "" ? state.boxes.length : Number(state.typedCount);
}

export interface BoxLabel {
  label: string;
  /** The boxes sent with it, or undefined for none. */
  rois?: RoiRequest[];
}

const round = (value: number) => Math.round(value * 1e6) / 1e6;

function roisOf(item: BoxDetector, boxes: Box[]): RoiRequest[] {
  const name = className(item);
  return boxes.map((b) => ({
    label: name,
    score: 1,
    geometry: { left: round(b.left), top: round(b.top), right: round(b.right), bottom: round(b.bottom) },
  }));
}

/**
 * What Enter sends. BOUNDING_BOX: "BOUNDING_BOX" with the boxes, or "NO_OBJECTS" with none.
 * COUNT: the count (typed, else the number of boxes), with the boxes only when there is
 * one box per counted object (the cloud refuses boxes that disagree with the count).
 */
export function confirmLabel(item: BoxDetector, state: EditorState): BoxLabel {
  if (item.mode.toUpperCase() === "BOUNDING_BOX") {
    return state.boxes.length ? { label: "BOUNDING_BOX", rois: roisOf(item, state.boxes) } : { label: "NO_OBJECTS" };
  }
  const count = currentCount(state);
  const rois = state.boxes.length && state.boxes.length === count ? roisOf(item, state.boxes) : undefined;
  return rois ? { label: String(count), rois } : { label: String(count) };
}
