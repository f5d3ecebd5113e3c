/**
 * Keyboard map of the review page, as plain functions so it can be tested without a DOM.
 *
 * Binary detectors: Y / N / U answer YES / NO / UNCLEAR. Multi-class detectors: digit
 * keys 1..9 pick the class in that position (0 picks the tenth). S skips, Z undoes the
 * last label, A accepts the model's answer. R resets the zoom, +/- zoom, O toggles the
 * overlay (heat map / boxes), M toggles smooth vs pixel-exact scaling, D the depth map in false
 * colour in place of the image (review/DepthView.tsx). Held-down keys (auto-repeat), keys with Ctrl/Alt/Meta and keys typed in a
 * form field are ignored, so a reviewer cannot label a run of images by accident.
 *
 * COUNT and BOUNDING_BOX detectors (boxes drawn with the mouse, see review/boxes.ts): Enter
 * confirms the boxes on screen (the model's, untouched, as they came), U answers UNCLEAR,
 * G "more than the maximum" (BOUNDING_BOX), Delete / Backspace removes the selected box,
 * Tab / Shift+Tab selects the next / previous box, the arrow keys move it (Shift: further),
 * N adds a box in the middle, Escape deselects, and digits type the count (COUNT).
 * Arrow keys may repeat when held, to move a box smoothly; no other key does.
 */
import { isBoxMode } from "./boxes";

export type ViewAction = "zoomIn" | "zoomOut" | "reset" | "overlay" | "smooth" | "depth";

export type ReviewCommand =
  | { kind: "label"; label: string }
  | { kind: "skip" }
  | { kind: "undo" }
  | { kind: "view"; action: ViewAction }
  | { kind: "confirm" }
  | { kind: "box"; action: BoxAction };

export type BoxAction =
  | { kind: "delete" }
  | { kind: "cycle"; step: 1 | -1 }
  | { kind: "nudge"; dx: number; dy: number }
  | { kind: "new" }
  | { kind: "deselect" }
  | { kind: "digit"; digit: string };

/** How far one arrow key press moves a box (image fractions); with Shift, ten times as far. */
export const NUDGE = 0.005;
const ARROWS: Record<string, [number, number]> = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

const VIEW_KEYS: Record<string, ViewAction> = { "+": "zoomIn", "=": "zoomIn", "-": "zoomOut", R: "reset", O: "overlay", M: "smooth", D: "depth" };

export interface KeyInput {
  key: string;
  repeat?: boolean;
  ctrlKey?: boolean;
  metaKey?: boolean;
  altKey?: boolean;
  shiftKey?: boolean;
  /** Tag name of the event target (INPUT, SELECT, ...). */
  targetTag?: string;
  targetEditable?: boolean;
}

export interface LabelledItem {
  mode: string;
  class_names: string[] | null;
  mode_configuration?: { class_name?: string; max_count?: number; max_num_bboxes?: number } | null;
  /** The model's answer, which A accepts. */
  edge_answer?: { label: string | null } | null;
}

export interface LabelOption {
  label: string;
  key: string;
  title: string;
}

const BINARY_OPTIONS: LabelOption[] = [
  { label: "YES", key: "Y", title: "Yes" },
  { label: "NO", key: "N", title: "No" },
  { label: "UNCLEAR", key: "U", title: "Unclear" },
];

const UNCLEAR_OPTION: LabelOption[] = [{ label: "UNCLEAR", key: "U", title: "Unclear" }];
const BOX_OPTIONS: LabelOption[] = [...UNCLEAR_OPTION, { label: "GREATER_THAN_MAX", key: "G", title: "More than the maximum" }];

const FORM_TAGS = new Set(["INPUT", "TEXTAREA", "SELECT"]);

export function isMultiClass(item: LabelledItem): boolean {
  return item.mode.toUpperCase() === "MULTI_CLASS" && (item.class_names?.length ?? 0) > 0;
}

/** The answers a reviewer can give for this item, with their keys, in display order. */
export function labelOptions(item: LabelledItem): LabelOption[] {
  if (isBoxMode(item)) return item.mode.toUpperCase() === "COUNT" ? UNCLEAR_OPTION : BOX_OPTIONS;
  if (!isMultiClass(item)) return BINARY_OPTIONS;
  return (item.class_names ?? []).slice(0, 10).map((name, index) => ({
    label: name,
    key: index === 9 ? "0" : String(index + 1),
    title: name,
  }));
}

/** The command a key press means for the item on screen, or null when it means nothing. */
export function commandForKey(input: KeyInput, item: LabelledItem | null): ReviewCommand | null {
  if (input.ctrlKey || input.metaKey || input.altKey) return null;
  if (input.targetEditable || (input.targetTag && FORM_TAGS.has(input.targetTag.toUpperCase()))) return null;
  const arrow = ARROWS[input.key];
  if (item !== null && arrow && isBoxMode(item)) {
    const step = NUDGE * (input.shiftKey ? 10 : 1);
    return { kind: "box", action: { kind: "nudge", dx: arrow[0] * step, dy: arrow[1] * step } };
  }
  if (input.repeat) return null;
  const key = input.key.length === 1 ? input.key.toUpperCase() : input.key;
  if (key === "Z") return { kind: "undo" };
  if (item === null) return null;
  if (isBoxMode(item)) {
    const box = boxCommand(key, Boolean(input.shiftKey), item.mode.toUpperCase() === "COUNT");
    if (box) return box;
  }
  if (key in VIEW_KEYS) return { kind: "view", action: VIEW_KEYS[key] };
  if (key === "S") return { kind: "skip" };
  const options = labelOptions(item);
  if (key === "A") {
    const model = modelAnswer(item);
    return model ? { kind: "label", label: model } : null;
  }
  const option = options.find((candidate) => candidate.key === key);
  return option ? { kind: "label", label: option.label } : null;
}

function boxCommand(key: string, shift: boolean, counting: boolean): ReviewCommand | null {
  if (key === "Enter") return { kind: "confirm" };
  if (key === "Delete" || key === "Backspace") return { kind: "box", action: { kind: "delete" } };
  if (key === "Tab") return { kind: "box", action: { kind: "cycle", step: shift ? -1 : 1 } };
  if (key === "N") return { kind: "box", action: { kind: "new" } };
  if (key === "Escape") return { kind: "box", action: { kind: "deselect" } };
  if (counting && /^[0-9]$/.test(key)) return { kind: "box", action: { kind: "digit", digit: key } };
  return null;
}

/**
 * The model's answer when it is one a reviewer could give (so A can accept it), else null.
 * A box answer is confirmed with Enter instead: its boxes are on screen to be checked.
 */
export function modelAnswer(item: LabelledItem): string | null {
  if (isBoxMode(item)) return null;
  const label = item.edge_answer?.label;
  if (!label) return null;
  return labelOptions(item).some((option) => option.label === label) ? label : null;
}
