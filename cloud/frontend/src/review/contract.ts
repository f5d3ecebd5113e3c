/** The review session's contract: what it needs from the cloud and what it shows. */
import type { ReviewItem, RoiRequest } from "../api/types";
import type { Sleep } from "./saving";

/** What the session needs from the cloud. */
export interface ReviewBackend {
  /**
   * The next item, claimed for this reviewer; null when none is waiting. `ahead` says the
   * reviewer already holds items and wants another one besides them.
   */
  claim(detectorId: string | undefined, ahead: boolean): Promise<ReviewItem | null>;
  /** `rois`: the boxes of a COUNT / BOUNDING_BOX label (none for other modes). */
  label(itemId: string, label: string, rois?: RoiRequest[]): Promise<unknown>;
  /**
   * Label the image query without a claim (POST /v1/labels): for a label re-sent after the
   * reviewer signed in again, whose claim belongs to the old token, or whose claim expired.
   */
  labelQuery(imageQueryId: string, label: string, rois?: RoiRequest[]): Promise<unknown>;
  /** The reviewer passes on this item: it goes to the back of their line. */
  skip(itemId: string): Promise<unknown>;
  /**
   * Hand back a claim unjudged (claimed ahead, never shown: the filter changed or the page
   * is closing); the item keeps its place in the queue.
   */
  release(itemId: string): Promise<unknown>;
  /** Undo this reviewer's label; the item comes back claimed by this reviewer. */
  undo(itemId: string): Promise<ReviewItem>;
  /** Download the image and return a URL the page can show at once. */
  loadImage(item: ReviewItem): Promise<string>;
  releaseImage(url: string): void;
  /** The next open items without claiming them, and how many are open (for the counter). */
  peek(detectorId: string | undefined, limit: number): Promise<{ count: number; items: ReviewItem[] }>;
}

export interface HeldItem {
  item: ReviewItem;
  imageUrl: string | null;
  imageError: string | null;
  /** Sign-in generation the claim was made under; a later one no longer holds the claim. */
  epoch?: number;
  /** Claim order: items wait in the order the cloud handed them out, whichever image loads first. */
  order?: number;
  /** Set when a label for this item was not saved and it came back on screen. */
  failure?: { label: string; message: string; direct: boolean; rois?: RoiRequest[] };
}

export type ReviewPhase = "loading" | "ready" | "empty" | "error";

export interface ReviewSnapshot {
  phase: ReviewPhase;
  current: HeldItem | null;
  /** Items claimed and preloaded behind the one on screen. */
  ahead: number;
  canUndo: boolean;
  busy: boolean;
  remaining: number | null;
  labeled: number;
  skipped: number;
  /** The last thing done, for the status line ("NO saved for iq_…"). */
  lastAction: string | null;
  error: string | null;
  detectorId: string | undefined;
  /** Labels given but not yet stored by the cloud (in flight, retrying or waiting for sign-in). */
  unsaved: number;
  /** The cloud refused the token: labels wait until the reviewer signs in again (then `resume`). */
  signInNeeded: boolean;
}

export interface ReviewSessionOptions {
  /** Items kept claimed behind the one on screen at first (2). */
  prefetch?: number;
  /** The most items kept claimed ahead for a reviewer faster than the refill (4). */
  maxAhead?: number;
  /** Milliseconds, for the reviewer's pace and the refill time (performance.now). */
  now?: () => number;
  undoDepth?: number;
  /** How long to wait before asking again when the queue is empty. */
  pollMs?: number;
  /** Called each time a new item takes the screen, for timing the wait between items. */
  onShow?: (item: ReviewItem) => void;
  /** Waits before each retry of a label that failed with a network error or a 5xx. */
  retryDelaysMs?: readonly number[];
  sleep?: Sleep;
}
