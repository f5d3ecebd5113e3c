/**
 * The boxes of a COUNT / BOUNDING_BOX item over its image, editable with the mouse: drag on
 * the image draws a box, drag a box moves it, drag a corner of the selected box resizes it,
 * a click selects. Shift+drag (or the middle button) pans the zoomed image as elsewhere.
 *
 * Drawn in image fractions inside the viewer's zoomed stage, so the boxes stay on the
 * objects at any zoom; the edits themselves are the pure functions of review/boxes.ts.
 */
import { type PointerEvent, useEffect, useRef, useState } from "react";
import {
  addBox,
  boxAt,
  type Corner,
  type EditorState,
  isDrawable,
  moved,
  type Point,
  replaceBox,
  resized,
  spanned,
} from "./boxes";

interface Drag {
  kind: "draw" | "move" | "resize";
  pointerId: number;
  origin: Point;
  start: EditorState;
  index: number;
  corner: Corner;
}

interface Props {
  state: EditorState;
  onChange: (state: EditorState) => void;
  className: string;
}

const CORNERS: Corner[] = ["nw", "ne", "sw", "se"];
/** Corner handles, in CSS pixels on screen. */
const HANDLE_PX = 12;

export function BoxEditor({ state, onChange, className }: Props) {
  const svg = useRef<SVGSVGElement>(null);
  const drag = useRef<Drag | null>(null);
  const [size, setSize] = useState({ w: 1, h: 1 });

  useEffect(() => {
    const el = svg.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(() => setSize({ w: el.clientWidth || 1, h: el.clientHeight || 1 }));
    observer.observe(el);
    return () => observer.disconnect();
  }, []);

  const pointAt = (event: PointerEvent): Point => {
    // The bounding box includes the viewer's zoom and pan: fractions come out right at any zoom.
    const rect = svg.current?.getBoundingClientRect();
    if (!rect || !rect.width || !rect.height) return { x: 0, y: 0 };
    const clamp = (v: number) => Math.min(1, Math.max(0, v));
    return { x: clamp((event.clientX - rect.left) / rect.width), y: clamp((event.clientY - rect.top) / rect.height) };
  };

  const onPointerDown = (event: PointerEvent<SVGSVGElement>) => {
    if (event.button !== 0 || event.shiftKey) return; // left to the viewer: pan
    event.stopPropagation();
    event.currentTarget.setPointerCapture?.(event.pointerId);
    const origin = pointAt(event);
    const corner = (event.target as Element).getAttribute("data-corner") as Corner | null;
    const hit = corner !== null ? state.selected : boxAt(state.boxes, origin);
    const base = { pointerId: event.pointerId, origin, start: state, index: hit ?? -1, corner: corner ?? "se" };
    if (corner !== null && hit !== null) drag.current = { ...base, kind: "resize" };
    else if (hit !== null) drag.current = { ...base, kind: "move" };
    else drag.current = { ...base, kind: "draw" };
    onChange({ ...state, selected: hit });
  };

  const onPointerMove = (event: PointerEvent<SVGSVGElement>) => {
    const current = drag.current;
    if (!current || current.pointerId !== event.pointerId) return;
    event.stopPropagation();
    const at = pointAt(event);
    const { start, index } = current;
    if (current.kind === "draw") {
      const box = spanned(current.origin, at);
      onChange(isDrawable(box) ? addBox(start, box) : { ...start, selected: null });
    } else if (current.kind === "move") {
      onChange(replaceBox(start, index, moved(start.boxes[index], at.x - current.origin.x, at.y - current.origin.y)));
    } else {
      const box = resized(start.boxes[index], current.corner, at);
      if (isDrawable(box)) onChange(replaceBox(start, index, box));
    }
  };

  const onPointerUp = (event: PointerEvent<SVGSVGElement>) => {
    if (drag.current?.pointerId !== event.pointerId) return;
    event.stopPropagation();
    drag.current = null;
  };

  const selected = state.selected === null ? null : state.boxes[state.selected];
  const hw = HANDLE_PX / size.w;
  const hh = HANDLE_PX / size.h;
  return (
    <svg
      ref={svg}
      className="box-editor"
      viewBox="0 0 1 1"
      preserveAspectRatio="none"
      data-testid="box-editor"
      data-boxes={state.boxes.length}
      onPointerDown={onPointerDown}
      onPointerMove={onPointerMove}
      onPointerUp={onPointerUp}
      onPointerCancel={onPointerUp}
      onDoubleClick={(event) => event.stopPropagation()}
    >
      {state.boxes.map((box, index) => (
        <rect
          key={index}
          className={index === state.selected ? "selected" : undefined}
          data-testid="box"
          x={box.left}
          y={box.top}
          width={box.right - box.left}
          height={box.bottom - box.top}
          vectorEffect="non-scaling-stroke"
        >
          <title>{`${className} ${index + 1}`}</title>
        </rect>
      ))}
      {selected &&
        CORNERS.map((corner) => (
          <rect
            key={corner}
            className="handle"
            data-corner={corner}
            x={(corner.endsWith("w") ? selected.left : selected.right) - hw / 2}
            y={(corner.startsWith("n") ? selected.top : selected.bottom) - hh / 2}
            width={hw}
            height={hh}
            vectorEffect="non-scaling-stroke"
          />
        ))}
    </svg>
  );
}
