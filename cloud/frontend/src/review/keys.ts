/**
 * Keyboard map of the review page, as plain functions so it can be tested without a DOM.
 *
 * Binary detectors: Y / N / U answer YES / NO / UNCLEAR. Multi-class detectors: digit
 * keys 1..9 pick the class in that position (0 picks the tenth). S skips, Z undoes the
 * last label, A accepts the model's answer. R resets the zoom, +/- zoom, O toggles the
 * overlay (heat map / boxes), M toggles smooth vs pixel-exact scaling. Held-down keys (auto-repeat), keys with Ctrl/Alt/Meta and keys typed in a
 * form field are ignored, so a reviewer cannot label a run of images by accident.
 */

export type ViewAction = "zoomIn" | "zoomOut" | "reset" | "overlay" | "smooth";

export type ReviewCommand =
  | { kind: "label"; label: string }
  | { kind: "skip" }
  | { kind: "undo" }
  | { kind: "view"; action: ViewAction };

const VIEW_KEYS: Record<string, ViewAction> = { "+": "zoomIn", "=": "zoomIn", "-": "zoomOut", R: "reset", O: "overlay", M: "smooth" };

export interface KeyInput {
  key: string;
  repeat?: boolean;
  ctrlKey?: boolean;
  metaKey?: boolean;
  altKey?: boolean;
  /** Tag name of the event target (INPUT, SELECT, ...). */
  targetTag?: string;
  targetEditable?: boolean;
}

export interface LabelledItem {
  mode: string;
  class_names: string[] | null;
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

const FORM_TAGS = new Set(["INPUT", "TEXTAREA", "SELECT"]);

export function isMultiClass(item: LabelledItem): boolean {
  return item.mode.toUpperCase() === "MULTI_CLASS" && (item.class_names?.length ?? 0) > 0;
}

/** The answers a reviewer can give for this item, with their keys, in display order. */
export function labelOptions(item: LabelledItem): LabelOption[] {
  if (!isMultiClass(item)) return BINARY_OPTIONS;
  return (item.class_names ?? []).slice(0, 10).map((name, index) => ({
    label: name,
    key: index === 9 ? "0" : String(index + 1),
    title: name,
  }));
}

/** The command a key press means for the item on screen, or null when it means nothing. */
export function commandForKey(input: KeyInput, item: LabelledItem | null): ReviewCommand | null {
  if (input.repeat || input.ctrlKey || input.metaKey || input.altKey) return null;
  if (input.targetEditable || (input.targetTag && FORM_TAGS.has(input.targetTag.toUpperCase()))) return null;
  const key = input.key.length === 1 ? input.key.toUpperCase() : input.key;
  if (key === "Z") return { kind: "undo" };
  if (item === null) return null;
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

/** The model's answer when it is one a reviewer could give (so A can accept it), else null. */
export function modelAnswer(item: LabelledItem): string | null {
  const label = item.edge_answer?.label;
  if (!label) return null;
  return labelOptions(item).some((option) => option.label === label) ? label : null;
}
