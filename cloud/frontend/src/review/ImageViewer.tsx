/**
 * The review image, as large as the frame allows (scaled up too, smooth or pixel-exact),
 * with wheel / pinch zoom and drag pan. The view (zoom, pan, smoothing, overlay) belongs
 * to the page, not to the item, so it stays the same from item to item: a reviewer who
 * zoomed into the weld seam finds the next image zoomed into the same place.
 */
import { type PointerEvent, type ReactNode, useEffect, useRef, useState } from "react";
import type { Roi } from "../api/types";

export interface ViewState {
  zoom: number;
  /** Pan in CSS pixels, from the frame's centre. */
  x: number;
  y: number;
  smooth: boolean;
  overlay: boolean;
}

export const INITIAL_VIEW: ViewState = { zoom: 1, x: 0, y: 0, smooth: true, overlay: true };
export const MAX_ZOOM = 16;

function clampZoom(zoom: number): number {
  return Math.min(MAX_ZOOM, Math.max(1, zoom));
}

/** Zoom to `zoom`, keeping the point `at` (CSS pixels from the frame's centre) where it is. */
export function zoomAt(view: ViewState, zoom: number, at: { x: number; y: number }): ViewState {
  const next = clampZoom(zoom);
  if (next === 1) return { ...view, zoom: 1, x: 0, y: 0 };
  const ratio = next / view.zoom;
  return { ...view, zoom: next, x: at.x - ratio * (at.x - view.x), y: at.y - ratio * (at.y - view.y) };
}

/** The largest size with the image's aspect ratio that fits the frame (scaling up as well as down). */
export function fitSize(natural: { w: number; h: number }, frame: { w: number; h: number }): { w: number; h: number } {
  if (!natural.w || !natural.h || !frame.w || !frame.h) return { w: 0, h: 0 };
  const scale = Math.min(frame.w / natural.w, frame.h / natural.h);
  return { w: natural.w * scale, h: natural.h * scale };
}

interface Props {
  src: string;
  alt: string;
  view: ViewState;
  onView: (update: (view: ViewState) => ViewState) => void;
  overlaySrc?: string | null;
  rois?: Roi[] | null;
  /** Drawn over the image inside the zoomed stage (the box editor). */
  children?: ReactNode;
}

export function ImageViewer({ src, alt, view, onView, overlaySrc, rois, children }: Props) {
  const frame = useRef<HTMLDivElement>(null);
  const [frameSize, setFrameSize] = useState({ w: 0, h: 0 });
  const [natural, setNatural] = useState({ w: 0, h: 0 });
  const pointers = useRef(new Map<number, { x: number; y: number }>());

  useEffect(() => {
    const el = frame.current;
    if (!el) return;
    const measure = () => setFrameSize({ w: el.clientWidth, h: el.clientHeight });
    measure();
    const observer = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(measure);
    observer?.observe(el);
    // Wheel zoom must be able to stop the page from scrolling: a non-passive listener.
    const onWheel = (event: WheelEvent) => {
      event.preventDefault();
      const rect = el.getBoundingClientRect();
      const at = { x: event.clientX - rect.left - rect.width / 2, y: event.clientY - rect.top - rect.height / 2 };
      onView((old) => zoomAt(old, old.zoom * Math.exp(-event.deltaY * 0.0015), at));
    };
    el.addEventListener("wheel", onWheel, { passive: false });
    return () => {
      observer?.disconnect();
      el.removeEventListener("wheel", onWheel);
    };
  }, [onView]);

  const centre = (x: number, y: number) => {
    const rect = frame.current?.getBoundingClientRect();
    return rect ? { x: x - rect.left - rect.width / 2, y: y - rect.top - rect.height / 2 } : { x: 0, y: 0 };
  };

  const onPointerDown = (event: PointerEvent<HTMLDivElement>) => {
    (event.target as Element).setPointerCapture?.(event.pointerId);
    pointers.current.set(event.pointerId, { x: event.clientX, y: event.clientY });
  };
  const onPointerMove = (event: PointerEvent<HTMLDivElement>) => {
    const last = pointers.current.get(event.pointerId);
    if (!last) return;
    const now = { x: event.clientX, y: event.clientY };
    const others = [...pointers.current.entries()].filter(([id]) => id !== event.pointerId);
    if (others.length === 1) {
      // Pinch: the distance between two fingers scales the zoom around their midpoint.
      const other = others[0][1];
      const before = Math.hypot(last.x - other.x, last.y - other.y);
      const after = Math.hypot(now.x - other.x, now.y - other.y);
      if (before > 0) onView((old) => zoomAt(old, (old.zoom * after) / before, centre((now.x + other.x) / 2, (now.y + other.y) / 2)));
    } else if (others.length === 0) {
      onView((old) => (old.zoom === 1 ? old : { ...old, x: old.x + now.x - last.x, y: old.y + now.y - last.y }));
    }
    pointers.current.set(event.pointerId, now);
  };
  const onPointerUp = (event: PointerEvent<HTMLDivElement>) => {
    pointers.current.delete(event.pointerId);
  };

  const size = fitSize(natural, frameSize);
  const fitted = size.w > 0;
  return (
    <div
      ref={frame}
      className={`viewer${view.zoom > 1 ? " zoomed" : ""}`}
      data-testid="viewer"
      data-zoom={view.zoom.toFixed(2)}
      onPointerDown={onPointerDown}
      onPointerMove={onPointerMove}
      onPointerUp={onPointerUp}
      onPointerCancel={onPointerUp}
      onDoubleClick={() => onView((old) => ({ ...old, zoom: 1, x: 0, y: 0 }))}
    >
      <div
        className="viewer-stage"
        style={{
          width: fitted ? size.w : undefined,
          height: fitted ? size.h : undefined,
          transform: `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`,
        }}
      >
        <img
          src={src}
          alt={alt}
          draggable={false}
          className={view.smooth ? "smooth" : "pixelated"}
          onLoad={(event) => setNatural({ w: event.currentTarget.naturalWidth, h: event.currentTarget.naturalHeight })}
        />
        {view.overlay && overlaySrc && <img src={overlaySrc} alt="Heat map" className="viewer-overlay" draggable={false} />}
        {view.overlay && rois && rois.length > 0 && (
          <svg className="viewer-boxes" viewBox="0 0 1 1" preserveAspectRatio="none" data-testid="rois">
            {rois.map((roi, index) => (
              <rect
                key={index}
                x={roi.geometry.left}
                y={roi.geometry.top}
                width={Math.max(0, roi.geometry.right - roi.geometry.left)}
                height={Math.max(0, roi.geometry.bottom - roi.geometry.top)}
                vectorEffect="non-scaling-stroke"
              >
                <title>{`${roi.label} ${(roi.score * 100).toFixed(0)} %`}</title>
              </rect>
            ))}
          </svg>
        )}
        {children}
      </div>
    </div>
  );
}
