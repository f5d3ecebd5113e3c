import { afterEach, describe, expect, it } from "vitest";
import { ApiError } from "../api/client";
import type { ReviewItem, RoiRequest } from "../api/types";
import { type ReviewBackend, ReviewSession } from "./session";

function makeItem(n: number, detectorId = "det_a"): ReviewItem {
  return {
    id: `ri_${n}`,
    image_query_id: `iq_${n}`,
    detector_id: detectorId,
    detector_name: detectorId,
    query: "Is it ok?",
    mode: "BINARY",
    class_names: null,
    reason: "low_confidence",
    edge_answer: { label: "YES", confidence: 0.6, from_edge: true, source: "ALGORITHM" },
    image_url: `/v1/image-queries/iq_${n}/image`,
    created_at: "2026-01-01T00:00:00Z",
    status: "pending",
    claimed_by: null,
    claim_expires_at: null,
    label: null,
  };
}

interface Deferred {
  resolve: () => void;
  reject: (error: Error) => void;
}

/**
 * An in-memory review queue with the cloud's claim semantics: a claimed item is not
 * handed out again until it is skipped, released or its label is undone.
 */
class MemoryQueue implements ReviewBackend {
  pending: ReviewItem[] = [];
  claimedBy = new Map<string, ReviewItem>();
  labels = new Map<string, string>();
  skips: string[] = [];
  /** Items handed back unjudged (release): they keep their place in the queue. */
  releases: string[] = [];
  calls: string[] = [];
  openImages = new Set<string>();
  released: string[] = [];
  holdLabels = false;
  heldLabels: Deferred[] = [];
  failLabel = false;
  /** HTTP statuses the next label requests fail with, one per request (0: network error). */
  labelFailures: number[] = [];
  /** Labels stored through POST /v1/labels (no claim needed), by image query id. */
  queryLabels = new Map<string, string>();
  revoked = false;
  failClaim = false;
  /** Claims wait until released (`heldClaims`), like a request still on its way. */
  holdClaims = false;
  heldClaims: (() => void)[] = [];
  /** Like the cloud: a claim answers with the item the reviewer already holds, if any. */
  lendsOne = false;
  loads: string[] = [];

  constructor(count: number, detectorId = "det_a") {
    for (let n = 1; n <= count; n += 1) this.pending.push(makeItem(n, detectorId));
  }

  async claim(detectorId: string | undefined, ahead = false) {
    this.calls.push(`claim:${detectorId ?? "*"}${ahead ? ":ahead" : ""}`);
    if (this.holdClaims) await new Promise<void>((resolve) => this.heldClaims.push(resolve));
    if (this.revoked) throw new ApiError(401, "Invalid API token.", "unauthorized");
    if (this.failClaim) throw new Error("HTTP 500");
    if (this.lendsOne) {
      const held = [...this.claimedBy.values()].find((item) => !detectorId || item.detector_id === detectorId);
      if (held) return { ...held, status: "claimed", claimed_by: "me" };
    }
    const index = this.pending.findIndex((item) => !detectorId || item.detector_id === detectorId);
    if (index < 0) return null;
    const [item] = this.pending.splice(index, 1);
    this.claimedBy.set(item.id, item);
    return { ...item, status: "claimed", claimed_by: "me" };
  }

  /** The boxes sent with each label, by item id. */
  rois = new Map<string, RoiRequest[] | undefined>();

  label(itemId: string, label: string, rois?: RoiRequest[]) {
    this.calls.push(`label:${itemId}:${label}`);
    this.rois.set(itemId, rois);
    const apply = () => {
      if (this.revoked) throw new ApiError(401, "Invalid API token.", "unauthorized");
      const status = this.labelFailures.shift();
      if (status !== undefined) throw new ApiError(status, status === 0 ? "Network error: Failed to fetch" : `HTTP ${status}`, null);
      if (this.failLabel) throw new Error("claim expired");
      if (!this.claimedBy.has(itemId)) throw new Error(`${itemId} not claimed`);
      this.claimedBy.delete(itemId);
      this.labels.set(itemId, label);
    };
    if (!this.holdLabels) return Promise.resolve().then(apply);
    return new Promise<void>((resolve, reject) => {
      this.heldLabels.push({
        resolve: () => {
          try {
            apply();
            resolve();
          } catch (error) {
            reject(error);
          }
        },
        reject,
      });
    });
  }

  async labelQuery(imageQueryId: string, label: string) {
    this.calls.push(`labelQuery:${imageQueryId}:${label}`);
    if (this.revoked) throw new ApiError(401, "Invalid API token.", "unauthorized");
    this.queryLabels.set(imageQueryId, label);
    const id = imageQueryId.replace("iq_", "ri_");
    this.claimedBy.delete(id);
    this.pending = this.pending.filter((item) => item.id !== id);
  }

  async skip(itemId: string) {
    this.calls.push(`skip:${itemId}`);
    const item = this.claimedBy.get(itemId);
    if (!item) throw new Error(`${itemId} not claimed`);
    this.claimedBy.delete(itemId);
    this.skips.push(itemId);
    this.pending.push(item);
  }

  /** Releases wait until let go (`heldReleases`), like a give-back still on its way. */
  holdReleases = false;
  heldReleases: (() => void)[] = [];

  async release(itemId: string) {
    this.calls.push(`release:${itemId}`);
    if (this.holdReleases) await new Promise<void>((resolve) => this.heldReleases.push(resolve));
    const item = this.claimedBy.get(itemId);
    if (!item) return; // not held any more: nothing to give back, as on the cloud
    this.claimedBy.delete(itemId);
    this.releases.push(itemId);
    const place = (id: string) => Number(id.split("_")[1]);
    const behind = this.pending.findIndex((other) => place(other.id) > place(itemId));
    this.pending.splice(behind < 0 ? this.pending.length : behind, 0, item);
  }

  async undo(itemId: string) {
    this.calls.push(`undo:${itemId}`);
    if (!this.labels.has(itemId)) throw new Error(`${itemId} has no label`);
    this.labels.delete(itemId);
    const item = makeItem(Number(itemId.split("_")[1]));
    this.claimedBy.set(itemId, item);
    return { ...item, status: "claimed", claimed_by: "me" };
  }

  async loadImage(item: ReviewItem) {
    this.loads.push(item.id);
    const url = `blob:${item.id}`;
    this.openImages.add(url);
    return url;
  }

  releaseImage(url: string) {
    this.released.push(url);
    this.openImages.delete(url);
  }

  async peek(detectorId: string | undefined, limit: number) {
    this.calls.push("peek");
    const open = this.pending.filter((item) => !detectorId || item.detector_id === detectorId);
    return { count: open.length, items: open.slice(0, limit) };
  }
}

/** Let every queued promise callback run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
}

let session: ReviewSession | null = null;

function open(queue: MemoryQueue, options = {}): ReviewSession {
  // Retries wait no time here: what is tested is that they happen, not how long they take.
  // A clock that stands still: the look-ahead deepens only where a test moves it (or starves it).
  session = new ReviewSession(queue, { pollMs: 60_000, retryDelaysMs: [1, 1], sleep: async () => undefined, now: () => 0, ...options });
  return session;
}

afterEach(() => {
  session?.dispose();
  session = null;
});

describe("ReviewSession", () => {
  it("shows the first item and keeps `prefetch` more claimed and preloaded", async () => {
    const queue = new MemoryQueue(5);
    const s = open(queue, { prefetch: 2 });
    expect(s.getSnapshot().phase).toBe("loading");
    s.start();
    await settle();
    const snap = s.getSnapshot();
    expect(snap.phase).toBe("ready");
    expect(snap.current?.item.id).toBe("ri_1");
    expect(snap.current?.imageUrl).toBe("blob:ri_1");
    expect(snap.ahead).toBe(2);
    expect([...queue.claimedBy.keys()]).toEqual(["ri_1", "ri_2", "ri_3"]);
    expect(snap.remaining).toBe(2);
    // Claims beyond the first ask for an item besides those held.
    expect(queue.calls.filter((c) => c.startsWith("claim"))).toEqual(["claim:*", "claim:*:ahead", "claim:*:ahead"]);
  });

  it("shows the next preloaded item synchronously when a label is given", async () => {
    const queue = new MemoryQueue(5);
    queue.holdLabels = true;
    const s = open(queue);
    s.start();
    await settle();
    expect(s.label("NO")).toBe(true);
    // No await: the next item is on screen before the label request has even finished.
    expect(s.getSnapshot().current?.item.id).toBe("ri_2");
    expect(s.getSnapshot().current?.imageUrl).toBe("blob:ri_2");
    expect(s.getSnapshot().labeled).toBe(1);
    queue.heldLabels.forEach((d) => d.resolve());
    await settle();
    expect(queue.labels.get("ri_1")).toBe("NO");
    expect(s.getSnapshot().lastAction).toBe("NO saved for iq_1");
    expect(s.getSnapshot().ahead).toBe(2);
  });

  it("labels every item once and ends empty", async () => {
    const queue = new MemoryQueue(4);
    const s = open(queue);
    s.start();
    await settle();
    const answers = ["YES", "NO", "UNCLEAR", "YES"];
    for (const answer of answers) {
      expect(s.label(answer)).toBe(true);
      await settle();
    }
    expect(Object.fromEntries(queue.labels)).toEqual({ ri_1: "YES", ri_2: "NO", ri_3: "UNCLEAR", ri_4: "YES" });
    const snap = s.getSnapshot();
    expect(snap.phase).toBe("empty");
    expect(snap.current).toBeNull();
    expect(snap.remaining).toBe(0);
    expect(s.label("YES")).toBe(false);
    expect(queue.claimedBy.size).toBe(0);
  });

  it("skip gives the item back to the queue and frees its image", async () => {
    const queue = new MemoryQueue(3);
    const s = open(queue, { prefetch: 1 });
    s.start();
    await settle();
    expect(s.skip()).toBe(true);
    expect(s.getSnapshot().current?.item.id).toBe("ri_2");
    await settle();
    expect(queue.skips).toEqual(["ri_1"]);
    expect(queue.released[0]).toBe("blob:ri_1");
    expect(s.getSnapshot().skipped).toBe(1);
    expect(queue.labels.size).toBe(0);
  });

  it("undo takes back the last label and puts the item on screen again", async () => {
    const queue = new MemoryQueue(5);
    const s = open(queue);
    s.start();
    await settle();
    s.label("YES");
    s.label("NO");
    await settle();
    expect(s.getSnapshot().current?.item.id).toBe("ri_3");
    expect(await s.undo()).toBe(true);
    let snap = s.getSnapshot();
    expect(snap.current?.item.id).toBe("ri_2");
    expect(snap.current?.imageUrl).toBe("blob:ri_2");
    expect(snap.labeled).toBe(1);
    expect(queue.labels.has("ri_2")).toBe(false);
    expect(queue.labels.get("ri_1")).toBe("YES");
    // The item that was on screen waits first in line.
    s.label("UNCLEAR");
    expect(s.getSnapshot().current?.item.id).toBe("ri_3");
    await settle();
    expect(queue.labels.get("ri_2")).toBe("UNCLEAR");
    expect(await s.undo()).toBe(true);
    expect(await s.undo()).toBe(true);
    snap = s.getSnapshot();
    expect(snap.current?.item.id).toBe("ri_1");
    expect(queue.labels.size).toBe(0);
    expect(await s.undo()).toBe(false);
  });

  it("undo waits for the label it undoes to be stored", async () => {
    const queue = new MemoryQueue(3);
    queue.holdLabels = true;
    const s = open(queue);
    s.start();
    await settle();
    s.label("YES");
    const undone = s.undo();
    await settle();
    expect(queue.calls.filter((c) => c.startsWith("undo"))).toEqual([]);
    expect(s.getSnapshot().busy).toBe(true);
    // Commands are refused while the undo is in flight, so nothing races it.
    expect(s.label("NO")).toBe(false);
    queue.heldLabels.forEach((d) => d.resolve());
    expect(await undone).toBe(true);
    expect(queue.calls.filter((c) => c.startsWith("label") || c.startsWith("undo"))).toEqual(["label:ri_1:YES", "undo:ri_1"]);
    expect(s.getSnapshot().current?.item.id).toBe("ri_1");
  });

  it("brings a label the cloud refused back on screen at once, marked, to be answered again", async () => {
    const queue = new MemoryQueue(3);
    queue.failLabel = true;
    const s = open(queue);
    s.start();
    await settle();
    s.label("YES");
    await settle();
    const snap = s.getSnapshot();
    expect(snap.error).toContain("was NOT saved");
    expect(snap.error).toContain("claim expired");
    expect(snap.labeled).toBe(0);
    expect(snap.unsaved).toBe(0);
    expect(snap.current?.item.id).toBe("ri_1");
    expect(snap.current?.failure).toMatchObject({ label: "YES", direct: false });
    expect(snap.lastAction).toBe("YES NOT saved for iq_1");
    // Nothing to undo: the refused label left the undo list when the item came back.
    expect(snap.canUndo).toBe(false);
    queue.failLabel = false;
    s.label("NO");
    expect(s.getSnapshot().current?.item.id).toBe("ri_2");
    await settle();
    expect(queue.labels.get("ri_1")).toBe("NO");
    expect(s.getSnapshot().current?.failure).toBeUndefined();
  });

  it("sends a label's boxes, and keeps them with the item when the cloud refuses them", async () => {
    const queue = new MemoryQueue(3);
    const box = { label: "bolt", score: 1, geometry: { left: 0.1, top: 0.2, right: 0.3, bottom: 0.4 } };
    queue.labelFailures = [400];
    const s = open(queue);
    s.start();
    await settle();
    s.label("BOUNDING_BOX", [box, box]);
    await settle();
    expect(s.getSnapshot().current?.failure).toMatchObject({ label: "BOUNDING_BOX", rois: [box, box] });
    expect(s.getSnapshot().error).toContain("HTTP 400");
    s.label("BOUNDING_BOX", [box]);
    await settle();
    expect(queue.labels.get("ri_1")).toBe("BOUNDING_BOX");
    expect(queue.rois.get("ri_1")).toEqual([box]);
    s.label("YES");
    await settle();
    expect(queue.rois.get("ri_2")).toBeUndefined();
  });

  it("retries a label after a 5xx or a network error and reports it saved only once stored", async () => {
    const queue = new MemoryQueue(4);
    queue.labelFailures = [503, 0];
    const s = open(queue);
    s.start();
    await settle();
    s.label("YES");
    await settle();
    expect(queue.calls.filter((c) => c === "label:ri_1:YES")).toHaveLength(3);
    expect(queue.labels.get("ri_1")).toBe("YES");
    const snap = s.getSnapshot();
    expect(snap.lastAction).toBe("YES saved for iq_1");
    expect(snap.error).toBeNull();
    expect(snap.current?.item.id).toBe("ri_2");
    expect(snap.labeled).toBe(1);
  });

  it("brings the item back when the retries run out, and saves it when answered again", async () => {
    const queue = new MemoryQueue(4);
    queue.labelFailures = [500, 502, 503];
    const s = open(queue);
    s.start();
    await settle();
    s.label("NO");
    await settle();
    let snap = s.getSnapshot();
    expect(queue.labels.has("ri_1")).toBe(false);
    expect(snap.current?.item.id).toBe("ri_1");
    expect(snap.current?.failure?.message).toContain("HTTP 503");
    expect(snap.labeled).toBe(0);
    // The item that was on screen waits first in line behind it.
    s.label("YES");
    snap = s.getSnapshot();
    expect(snap.current?.item.id).toBe("ri_2");
    await settle();
    expect(queue.labels.get("ri_1")).toBe("YES");
  });

  it("after a 409 (claim lost) the answer given again labels the image query itself", async () => {
    const queue = new MemoryQueue(3);
    queue.labelFailures = [409];
    const s = open(queue);
    s.start();
    await settle();
    s.label("YES");
    await settle();
    expect(s.getSnapshot().current?.failure?.direct).toBe(true);
    s.label("YES");
    await settle();
    expect(queue.queryLabels.get("iq_1")).toBe("YES");
    expect(s.getSnapshot().lastAction).toBe("YES saved for iq_1");
  });

  it("keeps labels refused with 401 until the reviewer signs in again, then sends them", async () => {
    const queue = new MemoryQueue(6);
    const s = open(queue, { prefetch: 1 });
    s.start();
    await settle();
    s.label("YES");
    await settle();
    expect(queue.labels.get("ri_1")).toBe("YES");
    queue.revoked = true;
    s.label("NO");
    await settle();
    let snap = s.getSnapshot();
    expect(snap.signInNeeded).toBe(true);
    expect(snap.unsaved).toBe(1);
    expect(snap.lastAction).toContain("NOT saved yet");
    expect(snap.lastAction).not.toContain("saved for");
    expect(queue.labels.has("ri_2")).toBe(false);
    // While signed out a further answer waits too, and no claim is tried.
    const claims = queue.calls.filter((c) => c.startsWith("claim")).length;
    s.label("UNCLEAR");
    await settle();
    snap = s.getSnapshot();
    expect(snap.unsaved).toBe(2);
    expect(queue.calls.filter((c) => c.startsWith("claim")).length).toBe(claims);
    // Signed in again (a new token: the old claims are not its own): sent by image query.
    queue.revoked = false;
    s.resume();
    await settle();
    snap = s.getSnapshot();
    expect(snap.signInNeeded).toBe(false);
    expect(snap.unsaved).toBe(0);
    expect(Object.fromEntries(queue.queryLabels)).toEqual({ iq_2: "NO", iq_3: "UNCLEAR" });
    expect(snap.labeled).toBe(3);
    expect(snap.current).not.toBeNull();
    expect(snap.error).toBeNull();
  });

  it("a label refused with the old token after the reviewer signed in again is sent again, not parked", async () => {
    const queue = new MemoryQueue(5);
    const s = open(queue, { prefetch: 1 });
    s.start();
    await settle();
    queue.holdClaims = true;
    s.label("YES");
    await settle();
    // A look-ahead claim is on its way when the token is revoked and the next answer is given.
    expect(queue.heldClaims.length).toBe(1);
    queue.revoked = true;
    queue.holdLabels = true;
    s.label("NO");
    await settle();
    queue.holdClaims = false;
    queue.heldClaims.shift()?.();
    await settle();
    // The claim was refused first: the form shows while the label is still on its way.
    expect(s.getSnapshot().signInNeeded).toBe(true);
    expect(s.getSnapshot().lastAction).toContain("NO saving for iq_2");
    queue.revoked = false;
    s.resume();
    queue.heldLabels.shift()?.reject(new ApiError(401, "Invalid API token.", "unauthorized"));
    await settle();
    const snap = s.getSnapshot();
    expect(snap.signInNeeded).toBe(false);
    expect(queue.queryLabels.get("iq_2")).toBe("NO");
    expect(snap.unsaved).toBe(0);
    expect(snap.lastAction).toBe("NO saved for iq_2");
  });

  it("changing the detector filter gives back held items and claims only that detector's", async () => {
    const queue = new MemoryQueue(3, "det_a");
    queue.pending.push(makeItem(10, "det_b"), makeItem(11, "det_b"));
    const s = open(queue, { prefetch: 1 });
    s.start();
    await settle();
    expect(s.getSnapshot().current?.item.detector_id).toBe("det_a");
    s.start("det_b");
    await settle();
    expect(queue.releases.sort()).toEqual(["ri_1", "ri_2"]);
    expect(queue.skips).toEqual([]);
    expect(s.getSnapshot().current?.item.id).toBe("ri_10");
    expect(s.getSnapshot().detectorId).toBe("det_b");
    expect(s.getSnapshot().remaining).toBe(0);
    expect([...queue.openImages].sort()).toEqual(["blob:ri_10", "blob:ri_11"]);
  });

  it("a filter change keeps the queue's order: items claimed ahead come back first, not last", async () => {
    const queue = new MemoryQueue(4, "det_a");
    const s = open(queue, { prefetch: 3 });
    s.start();
    await settle();
    expect(queue.claimedBy.size).toBe(4);
    s.start("det_a"); // the reviewer picks the detector they were already seeing
    await settle();
    const seen: string[] = [];
    for (let n = 0; n < 4; n += 1) {
      seen.push(s.getSnapshot().current?.item.id ?? "none");
      s.label("YES");
      await settle();
    }
    expect(seen).toEqual(["ri_1", "ri_2", "ri_3", "ri_4"]);
    expect(queue.skips).toEqual([]);
  });

  it("after a filter change, claims wait for the give-backs: a slow release does not empty the queue", async () => {
    const queue = new MemoryQueue(3, "det_a");
    const s = open(queue, { prefetch: 2, pollMs: 60_000 });
    s.start();
    await settle();
    expect(queue.claimedBy.size).toBe(3);
    queue.holdReleases = true;
    queue.calls = [];
    s.start("det_a");
    await settle();
    // Still this reviewer's on the cloud: a claim now would find nothing free.
    expect(queue.calls.filter((c) => c.startsWith("claim"))).toEqual([]);
    expect(s.getSnapshot().phase).toBe("loading");
    for (const letGo of queue.heldReleases.splice(0)) letGo();
    await settle();
    const seen: string[] = [];
    for (let n = 0; n < 3; n += 1) {
      seen.push(s.getSnapshot().current?.item.id ?? "none");
      s.label("YES");
      await settle();
    }
    expect(seen).toEqual(["ri_1", "ri_2", "ri_3"]);
    expect(s.getSnapshot().phase).toBe("empty");
  });

  it("says what failed when claiming fails, and recovers on the next poll", async () => {
    const queue = new MemoryQueue(2);
    queue.failClaim = true;
    const s = open(queue, { pollMs: 5 });
    s.start();
    await settle();
    expect(s.getSnapshot().phase).toBe("error");
    expect(s.getSnapshot().error).toContain("HTTP 500");
    queue.failClaim = false;
    await new Promise((resolve) => setTimeout(resolve, 20));
    await settle();
    expect(s.getSnapshot().phase).toBe("ready");
    expect(s.getSnapshot().error).toBeNull();
  });

  it("picks up items that arrive while the queue is empty", async () => {
    const queue = new MemoryQueue(0);
    const s = open(queue, { pollMs: 5 });
    s.start();
    await settle();
    expect(s.getSnapshot().phase).toBe("empty");
    queue.pending.push(makeItem(7));
    await new Promise((resolve) => setTimeout(resolve, 20));
    await settle();
    expect(s.getSnapshot().current?.item.id).toBe("ri_7");
  });

  it("keeps an item whose image failed, with a message, so it can be skipped", async () => {
    const queue = new MemoryQueue(2);
    queue.loadImage = async () => {
      throw new Error("HTTP 404");
    };
    const s = open(queue);
    s.start();
    await settle();
    const snap = s.getSnapshot();
    expect(snap.current?.imageUrl).toBeNull();
    expect(snap.current?.imageError).toContain("HTTP 404");
    expect(s.skip()).toBe(true);
  });

  it("dispose gives back every claimed item and frees every image", async () => {
    const queue = new MemoryQueue(5);
    const s = open(queue);
    s.start();
    await settle();
    s.label("YES");
    await settle();
    s.dispose();
    session = null;
    await settle();
    expect(queue.claimedBy.size).toBe(0);
    expect(queue.openImages.size).toBe(0);
    expect(queue.labels.get("ri_1")).toBe("YES");
  });

  it("calls onShow each time a new item takes the screen", async () => {
    const shown: string[] = [];
    const queue = new MemoryQueue(3);
    const s = open(queue, { onShow: (item: ReviewItem) => shown.push(item.id) });
    s.start();
    await settle();
    s.label("YES");
    s.skip();
    await s.undo();
    expect(shown).toEqual(["ri_1", "ri_2", "ri_3", "ri_1"]);
  });

  describe("look-ahead", () => {
    /** Each claim takes 300 ms on the test's clock, like a cloud 300 ms away. */
    function farAway(queue: MemoryQueue, clock: { t: number }) {
      const claim = queue.claim.bind(queue);
      queue.claim = (detectorId: string | undefined, ahead: boolean) => {
        clock.t += 300;
        return claim(detectorId, ahead);
      };
    }

    it("claims deeper, several claims at once, for a reviewer faster than the refill, and gives all back on leaving", async () => {
      const queue = new MemoryQueue(20);
      const clock = { t: 0 };
      farAway(queue, clock);
      const s = open(queue, { prefetch: 2, maxAhead: 4, now: () => clock.t });
      s.start();
      await settle();
      expect(s.getSnapshot().ahead).toBe(2);
      queue.holdClaims = true;
      // Three answers 50 ms apart, each faster than a 300 ms refill.
      for (let n = 0; n < 3; n += 1) {
        clock.t += 50;
        expect(s.label("YES")).toBe(true);
      }
      await settle();
      // Nothing left on screen: three claims are on their way at once, not one after another.
      expect(s.getSnapshot().current).toBeNull();
      expect(queue.heldClaims).toHaveLength(3);
      queue.holdClaims = false;
      queue.heldClaims.splice(0).forEach((resume) => resume());
      await settle();
      const snap = s.getSnapshot();
      expect(snap.current).not.toBeNull();
      // Deepened from 2 to 4 (the bound), not further.
      expect(snap.ahead).toBe(4);
      expect(queue.claimedBy.size).toBe(5);
      expect(queue.labels.size).toBe(3);
      s.dispose();
      session = null;
      await settle();
      expect(queue.claimedBy.size).toBe(0);
      expect(queue.openImages.size).toBe(0);
    });

    it("keeps two ahead for a reviewer who looks at each image longer than a refill takes", async () => {
      const queue = new MemoryQueue(20);
      const clock = { t: 0 };
      farAway(queue, clock);
      const s = open(queue, { prefetch: 2, maxAhead: 4, now: () => clock.t });
      s.start();
      await settle();
      for (let n = 0; n < 6; n += 1) {
        clock.t += 1000;
        s.label("NO");
        await settle();
      }
      expect(s.getSnapshot().ahead).toBe(2);
      expect(queue.claimedBy.size).toBe(3);
    });

    it("claims the next item while the one before still downloads its image", async () => {
      const queue = new MemoryQueue(5);
      const gates: (() => void)[] = [];
      const load = queue.loadImage.bind(queue);
      queue.loadImage = async (item: ReviewItem) => {
        await new Promise<void>((resolve) => gates.push(resolve));
        return load(item);
      };
      const s = open(queue, { prefetch: 2 });
      s.start();
      await settle();
      // No image has arrived, yet all three items are claimed and downloading.
      expect(s.getSnapshot().current).toBeNull();
      expect([...queue.claimedBy.keys()]).toEqual(["ri_1", "ri_2", "ri_3"]);
      expect(gates.length).toBeGreaterThanOrEqual(3);
      gates.splice(0).forEach((open_) => open_());
      await settle();
      gates.splice(0).forEach((open_) => open_());
      await settle();
      expect(s.getSnapshot().current?.item.id).toBe("ri_1");
      expect(s.getSnapshot().ahead).toBe(2);
    });

    it("gives back at once the items whose image is still loading when the page is left", async () => {
      const queue = new MemoryQueue(5);
      const load = queue.loadImage.bind(queue);
      queue.loadImage = async (item: ReviewItem) => {
        if (item.id !== "ri_1") await new Promise<void>(() => undefined); // never arrives
        return load(item);
      };
      const s = open(queue, { prefetch: 2 });
      s.start();
      await settle();
      expect(s.getSnapshot().current?.item.id).toBe("ri_1");
      expect(queue.claimedBy.size).toBe(3);
      s.dispose();
      session = null;
      await settle();
      expect(queue.claimedBy.size).toBe(0);
      expect(queue.calls.filter((c) => c.startsWith("release")).sort()).toEqual([
        "release:ri_1",
        "release:ri_2",
        "release:ri_3",
      ]);
    });

    it("keeps the cloud's order in line when a later item's image arrives first", async () => {
      const queue = new MemoryQueue(5);
      const gates = new Map<string, () => void>();
      const load = queue.loadImage.bind(queue);
      queue.loadImage = async (item: ReviewItem) => {
        if (item.id !== "ri_1") await new Promise<void>((resolve) => gates.set(item.id, resolve));
        return load(item);
      };
      const s = open(queue, { prefetch: 2 });
      s.start();
      await settle();
      expect(s.getSnapshot().current?.item.id).toBe("ri_1");
      gates.get("ri_3")?.();
      await settle();
      gates.get("ri_2")?.();
      await settle();
      s.label("YES");
      expect(s.getSnapshot().current?.item.id).toBe("ri_2");
      s.label("NO");
      expect(s.getSnapshot().current?.item.id).toBe("ri_3");
    });

    it("does not wait for a label in flight before claiming, once the cloud honours `ahead`", async () => {
      const queue = new MemoryQueue(6);
      queue.holdLabels = true;
      const s = open(queue, { prefetch: 1 });
      s.start();
      await settle();
      s.label("YES");
      s.label("NO");
      await settle();
      // Both labels still on their way, and the next item is on screen already.
      expect(queue.heldLabels).toHaveLength(2);
      expect(s.getSnapshot().current?.item.id).toBe("ri_3");
      expect(queue.calls.filter((c) => c.startsWith("claim")).slice(-2)).toEqual(["claim:*:ahead", "claim:*:ahead"]);
      queue.heldLabels.splice(0).forEach((d) => d.resolve());
      await settle();
      expect(Object.fromEntries(queue.labels)).toEqual({ ri_1: "YES", ri_2: "NO" });
    });
  });

  describe("with a cloud that lends one item at a time", () => {
    it("claims the next item only after the label is stored, with its image already downloaded", async () => {
      const queue = new MemoryQueue(4);
      queue.lendsOne = true;
      queue.holdLabels = true;
      const s = open(queue, { prefetch: 2 });
      s.start();
      await settle();
      expect(s.getSnapshot().current?.item.id).toBe("ri_1");
      expect(s.getSnapshot().ahead).toBe(0);
      // The next images were downloaded ahead without claiming their items.
      expect(queue.loads).toEqual(["ri_1", "ri_2", "ri_3", "ri_4"]);
      expect([...queue.claimedBy.keys()]).toEqual(["ri_1"]);
      s.label("YES");
      await settle();
      // Not claimed yet: the label is still in flight and the cloud would hand back ri_1.
      expect(s.getSnapshot().current).toBeNull();
      expect(s.getSnapshot().phase).toBe("loading");
      const claimsBefore = queue.calls.filter((c) => c.startsWith("claim")).length;
      queue.heldLabels.forEach((d) => d.resolve());
      await settle();
      expect(s.getSnapshot().current?.item.id).toBe("ri_2");
      expect(s.getSnapshot().current?.imageUrl).toBe("blob:ri_2");
      expect(queue.calls.filter((c) => c.startsWith("claim")).length).toBe(claimsBefore + 1);
      // ri_2's image came from the preloaded ones: no second download.
      expect(queue.loads.filter((id) => id === "ri_2")).toHaveLength(1);
    });

    it("labels a whole queue, one claim per item after the first discovery", async () => {
      const queue = new MemoryQueue(6);
      queue.lendsOne = true;
      const s = open(queue);
      s.start();
      await settle();
      for (let n = 0; n < 6; n += 1) {
        expect(s.label(n % 2 ? "NO" : "YES")).toBe(true);
        await settle();
      }
      expect(queue.labels.size).toBe(6);
      expect(s.getSnapshot().phase).toBe("empty");
      expect(new Set(queue.loads).size).toBe(6);
      // Fewer looks at the queue than items: the preloaded images carry several claims.
      expect(queue.calls.filter((c) => c === "peek").length).toBeLessThan(6);
      // Every image was downloaded once.
      expect(queue.loads).toHaveLength(6);
      expect(queue.openImages.size).toBeLessThanOrEqual(6);
    });

    it("undo brings back the item while the next one stays claimed", async () => {
      const queue = new MemoryQueue(3);
      queue.lendsOne = true;
      const s = open(queue);
      s.start();
      await settle();
      s.label("YES");
      await settle();
      expect(s.getSnapshot().current?.item.id).toBe("ri_2");
      expect(await s.undo()).toBe(true);
      expect(s.getSnapshot().current?.item.id).toBe("ri_1");
      expect(s.getSnapshot().ahead).toBe(1);
      s.label("NO");
      expect(s.getSnapshot().current?.item.id).toBe("ri_2");
      await settle();
      expect(queue.labels.get("ri_1")).toBe("NO");
    });
  });

  it("a filter change while an image loads never releases the item the new filter got", async () => {
    const queue = new MemoryQueue(3);
    queue.lendsOne = true;
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const load = queue.loadImage.bind(queue);
    queue.loadImage = async (item: ReviewItem) => {
      await gate;
      return load(item);
    };
    const s = open(queue);
    s.start();
    await settle(); // ri_1 claimed, its image still loading
    s.start("det_a");
    release();
    await settle();
    expect(s.getSnapshot().current).not.toBeNull();
    const shown = s.getSnapshot().current!.item.id;
    expect(queue.claimedBy.has(shown)).toBe(true);
    s.label("YES");
    await settle();
    expect(s.getSnapshot().error).toBeNull();
    expect(queue.labels.get(shown)).toBe("YES");
  });

  it("gives an item back once when a late claim answer names an item already given back", async () => {
    const queue = new MemoryQueue(3);
    queue.lendsOne = true;
    let answer: () => void = () => undefined;
    const claim = queue.claim.bind(queue);
    let calls = 0;
    queue.claim = async (detectorId: string | undefined, ahead: boolean) => {
      calls += 1;
      // The cloud answers the second claim with the held ri_1, and the answer is slow to arrive.
      const item = await claim(detectorId, ahead);
      if (calls === 2) await new Promise<void>((resolve) => (answer = resolve));
      return item;
    };
    const s = open(queue);
    s.start();
    await settle(); // ri_1 shown, the second claim hangs
    s.start("det_a"); // gives ri_1 back
    answer();
    await settle();
    expect(queue.releases).toEqual(["ri_1"]);
    expect(queue.calls.filter((c) => c === "release:ri_1")).toHaveLength(1);
    expect(s.getSnapshot().current).not.toBeNull();
    s.label("NO");
    await settle();
    expect(s.getSnapshot().error).toBeNull();
  });
});
