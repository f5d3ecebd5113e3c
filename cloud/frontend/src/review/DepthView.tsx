/**
 * The depth map of an image sent with one (RGB + depth cameras), shown in false colour in
 * place of the image: D toggles it. The cloud renders the view (GET
 * /v1/image-queries/{id}/depth?view=colour: height against the part's own plane, green on
 * the plane, blue recessed, red raised, black without a reading), the map's own size, which
 * has the image's aspect ratio: it fits the same frame and the boxes stay where they were.
 *
 * The view is asked for only while it is on: nothing is fetched for a reviewer who never
 * presses D. Once on, it stays on from item to item (as the overlay does); an image sent
 * without a depth map answers 404 and the hint says so.
 */
import { useEffect, useState } from "react";
import type { Client } from "../api/client";
import { ApiError } from "../api/client";

export const depthColourPath = (imageQueryId: string) => `/v1/image-queries/${imageQueryId}/depth?view=colour`;

export type DepthState = "off" | "loading" | "shown" | "none" | "error";

export interface DepthView {
  /** Object URL of the false-colour view while it is shown, else null (the image is shown). */
  src: string | null;
  state: DepthState;
}

type Fetched = { id: string; src: string | null; state: DepthState };

export function useDepthView(client: Pick<Client, "imageObjectUrl">, imageQueryId: string | undefined, on: boolean): DepthView {
  const [fetched, setFetched] = useState<Fetched | null>(null);
  const wanted = on ? imageQueryId : undefined;
  useEffect(() => {
    if (!wanted) return;
    let live = true;
    let made: string | null = null;
    client.imageObjectUrl(depthColourPath(wanted)).then(
      (objectUrl) => {
        made = objectUrl;
        if (live) setFetched({ id: wanted, src: objectUrl, state: "shown" });
        else URL.revokeObjectURL(objectUrl);
      },
      (error: unknown) => {
        const none = error instanceof ApiError && error.status === 404;
        if (live) setFetched({ id: wanted, src: null, state: none ? "none" : "error" });
      },
    );
    return () => {
      live = false;
      if (!made) return;
      const revoked = made;
      URL.revokeObjectURL(revoked);
      setFetched((old) => (old?.src === revoked ? null : old)); // never show a revoked URL again
    };
  }, [client, wanted]);
  if (!wanted) return { src: null, state: "off" };
  // What was fetched for another item (or the last time it was on) is not this item's.
  if (fetched?.id !== wanted) return { src: null, state: "loading" };
  return { src: fetched.src, state: fetched.state };
}

const SAYS: Record<DepthState, string> = {
  off: "off",
  loading: "loading…",
  shown: "on",
  none: "no depth map for this image",
  error: "could not be loaded",
};

/** The viewer hint's part about depth: the key and what it shows now. */
export function DepthHint({ state }: { state: DepthState }) {
  return (
    <span data-testid="depth-hint" data-state={state}>
      <kbd>D</kbd> depth {SAYS[state]}
    </span>
  );
}
