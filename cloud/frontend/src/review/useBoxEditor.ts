/**
 * The box editor's state for the item on screen: it starts from the model's boxes, or from
 * the reviewer's own when the cloud refused them and the item came back, and starts afresh
 * when another item takes the screen.
 */
import { useCallback, useState } from "react";
import { type EditorState, initialState, isBoxMode } from "./boxes";
import type { HeldItem } from "./contract";

type Update = (change: (state: EditorState) => EditorState) => void;

function keyOf(held: HeldItem | null): string {
  if (!held || !isBoxMode(held.item)) return "";
  return `${held.item.id}|${held.failure ? `${held.failure.label}|${held.failure.message}` : ""}`;
}

function startOf(held: HeldItem | null): EditorState {
  const sent = held?.failure?.rois;
  if (sent) return initialState(sent.map((roi) => ({ ...roi, score: roi.score ?? 1 })));
  return initialState(held?.item.rois);
}

export function useBoxEditor(held: HeldItem | null): [EditorState, Update] {
  const key = keyOf(held);
  const [edit, setEdit] = useState<{ key: string; state: EditorState }>(() => ({ key, state: startOf(held) }));
  const state = edit.key === key ? edit.state : startOf(held);
  const update = useCallback<Update>(
    (change) =>
      setEdit((old) => ({ key, state: change(old.key === key ? old.state : startOf(held)) })),
    [key, held],
  );
  return [state, update];
}
