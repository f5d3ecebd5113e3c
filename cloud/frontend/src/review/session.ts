/**
 * The review session: claim, preload, label, skip and undo, without React or the DOM.
 *
 * Speed is the point. A label or skip is sent in the background and the next item takes
 * the screen as soon as it is ours. Claims keep two reviewers from seeing the same item.
 * The session keeps items claimed ahead (`POST /v1/review/claim?ahead=true`), two by
 * default and up to four for a reviewer who answers faster than a refill takes
 * (review/lookahead.ts); once the cloud is known to honour `ahead`, several claims go out
 * at once and each item's image downloads while the next claim is on its way, so refilling
 * keeps pace with a fast reviewer on a far-away cloud. A cloud that lends one item at a
 * time (its claim answers with the item already held) gets one claim after each stored
 * label instead. Either way the images of the next items in the queue are downloaded and
 * decoded beforehand, so the wait between items is never an image download.
 *
 * Undo waits for the label it undoes to be stored, asks the cloud to undo it (which
 * claims the item again for this reviewer) and puts the item back on screen; the item
 * that was on screen goes back to the front of the line.
 *
 * React reads it through `subscribe` / `getSnapshot` (useSyncExternalStore); tests drive
 * it with an in-memory backend.
 */
import type { ReviewItem, RoiRequest } from "../api/types";
import type { HeldItem, ReviewBackend, ReviewPhase, ReviewSessionOptions, ReviewSnapshot } from "./contract";
import { LookAhead } from "./lookahead";
import { Preloads } from "./preloads";
import { failureKind, realSleep, type SaveOutcome, type Sleep, saveWithRetry } from "./saving";

export type { HeldItem, ReviewBackend, ReviewPhase, ReviewSessionOptions, ReviewSnapshot } from "./contract";

interface Answered {
  held: HeldItem;
  label: string;
  rois?: RoiRequest[];
  /** Resolves true when the cloud stored the label, false when the item came back unsaved. */
  stored: Promise<boolean>;
  settle: (stored: boolean) => void;
  saved: boolean;
}


/** Claims between two looks at the queue when the preloaded images suffice. */
const PEEK_EVERY = 4;
/**
 * Claims on their way at once (with a cloud that honours `ahead`). A browser opens six
 * connections to a host; labels and images need the rest.
 */
const PARALLEL_CLAIMS = 3;

function message(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

export class ReviewSession {
  private readonly lookAhead: LookAhead;
  private readonly now: () => number;
  private readonly undoDepth: number;
  private readonly pollMs: number;
  private readonly onShow?: (item: ReviewItem) => void;
  private readonly retryDelaysMs: readonly number[];
  private readonly sleep: Sleep;
  /** Bumped by `resume` (a new sign-in): claims made before belong to the old token. */
  private epoch = 0;
  private signInNeeded = false;
  /** Labels refused with 401, sent again by `resume`. */
  private awaitingSignIn: Answered[] = [];

  private detectorId: string | undefined = undefined;
  private generation = 0;
  private current: HeldItem | null = null;
  private buffer: HeldItem[] = [];
  private answered: Answered[] = [];
  private claiming = false;
  private exhausted = false;
  /** Set once the cloud answers a claim with an item already held: it lends one at a time. */
  private oneAtATime = false;
  /** Set once an `ahead` claim brought a new item while others were held: claims may overlap. */
  private aheadHonoured = false;
  /** Claims answered so far: each item's place in line. */
  private claimed = 0;
  /** Items claimed whose image is still loading (held, but not yet in `buffer`). */
  private arriving = new Set<string>();
  /** Wakes a claim run waiting for something to change (an answer, an arrival, a restart). */
  private wake: (() => void) | null = null;
  /** Label and skip requests in flight; a claim waits for them (the cloud may hand back the held item). */
  private writes = new Set<Promise<unknown>>();
  /**
   * Give-backs in flight. Every claim waits for them: until the cloud has them back they are
   * still this reviewer's, so even an `ahead` claim would pass them by and find the queue empty.
   */
  private releases = new Set<Promise<unknown>>();
  /** Images of upcoming (unclaimed) items. */
  private readonly preloaded: Preloads;
  private peeking = false;
  private claimsSincePeek = 0;
  private refillRun: Promise<void> = Promise.resolve();
  /** Items given back by a filter change; a late claim answer naming one needs no second release. */
  private givenBack = new Set<string>();
  private peekAgain = false;
  private undoing = false;
  private started = false;
  private fatal: string | null = null;
  private error: string | null = null;
  private lastAction: string | null = null;
  private remaining: number | null = null;
  private labeled = 0;
  private skipped = 0;
  private pollTimer: ReturnType<typeof setTimeout> | null = null;
  private listeners = new Set<() => void>();
  private snapshot: ReviewSnapshot;
  private disposed = false;

  constructor(
    private readonly backend: ReviewBackend,
    options: ReviewSessionOptions = {},
  ) {
    const prefetch = options.prefetch ?? 2;
    this.now = options.now ?? (() => performance.now());
    this.lookAhead = new LookAhead(prefetch, Math.max(prefetch, options.maxAhead ?? 4), this.now);
    this.undoDepth = options.undoDepth ?? 20;
    this.pollMs = options.pollMs ?? 5000;
    this.onShow = options.onShow;
    this.retryDelaysMs = options.retryDelaysMs ?? [500, 1500];
    this.sleep = options.sleep ?? realSleep;
    this.preloaded = new Preloads(backend);
    this.snapshot = this.buildSnapshot();
  }

  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  getSnapshot = (): ReviewSnapshot => this.snapshot;

  /** Start (or restart with another detector filter): held items are given back first. */
  start(detectorId?: string): void {
    this.releaseHeld();
    this.preloaded.keepOnly([]);
    this.remaining = null;
    this.claimsSincePeek = 0;
    this.disposed = false;
    this.generation += 1;
    this.detectorId = detectorId || undefined;
    this.exhausted = false;
    this.claiming = false;
    this.fatal = null;
    this.error = null;
    this.started = true;
    this.wakeFill();
    this.emit();
    void this.refill();
  }

  /** Give back what this reviewer holds and stop asking the cloud (until started again). */
  dispose(): void {
    this.releaseHeld();
    for (const entry of this.answered) this.releaseUrl(entry.held.imageUrl);
    this.answered = [];
    this.preloaded.keepOnly([]);
    this.generation += 1;
    this.disposed = true;
    this.clearPoll();
    this.wakeFill();
  }

  /** Store `label` (with its boxes, if any) for the item on screen and show the next one at once. */
  label(label: string, rois?: RoiRequest[]): boolean {
    const held = this.current;
    if (!held || this.undoing) return false;
    let settle: (stored: boolean) => void = () => undefined;
    const stored = new Promise<boolean>((resolve) => {
      settle = resolve;
    });
    const entry: Answered = { held: { ...held, failure: undefined }, label, rois, stored, settle, saved: false };
    this.answered.push(entry);
    this.trimUndo();
    this.labeled += 1;
    this.error = null;
    this.lastAction = `${label} saving for ${held.item.image_query_id}…`;
    this.answeredOne();
    this.advance();
    if (this.signInNeeded) this.awaitingSignIn.push(entry);
    else void this.save(entry, held.failure?.direct ?? false);
    void this.refill();
    return true;
  }

  /** After the reviewer signed in again: send the labels that waited, claim again. */
  resume(): void {
    if (!this.signInNeeded) return;
    this.signInNeeded = false;
    this.epoch += 1;
    this.fatal = null;
    this.error = null;
    for (const entry of this.awaitingSignIn.splice(0)) void this.save(entry, true);
    this.retryImages();
    this.exhausted = false;
    this.emit();
    void this.refill();
  }

  /** Images refused while signed out (401) are fetched again with the new token. */
  private retryImages(): void {
    for (const held of [this.current, ...this.buffer]) {
      if (!held || held.imageUrl || !held.imageError) continue;
      const id = held.item.id;
      this.backend.loadImage(held.item).then(
        (url) => {
          const now = [this.current, ...this.buffer].find((h) => h?.item.id === id);
          if (!now || now.imageUrl) return this.releaseUrl(url);
          now.imageUrl = url;
          now.imageError = null;
          if (this.current?.item.id === id) this.current = { ...now };
          this.emit();
        },
        () => undefined,
      );
    }
  }

  /** Send one label (retrying transient failures) and act on the outcome. */
  private async save(entry: Answered, direct: boolean): Promise<void> {
    const { item } = entry.held;
    // A claim made under an earlier sign-in is the old token's: label the query itself.
    const unclaimed = direct || (entry.held.epoch ?? 0) !== this.epoch;
    const write = unclaimed
      ? () => this.backend.labelQuery(item.image_query_id, entry.label, entry.rois)
      : () => this.backend.label(item.id, entry.label, entry.rois);
    const sentUnder = this.epoch;
    const outcome = await this.track(
      saveWithRetry(write, this.retryDelaysMs, this.sleep, (attempt, why) => {
        this.lastAction = `${entry.label} for ${item.image_query_id} not saved yet (${why}); retry ${attempt}…`;
        this.emit();
      }),
    );
    // Refused with a token the reviewer has replaced since: send it again under the new sign-in.
    if (!outcome.stored && outcome.kind === "auth" && sentUnder !== this.epoch && !this.signInNeeded) {
      void this.save(entry, true);
      return;
    }
    this.settleSave(entry, outcome);
  }

  private settleSave(entry: Answered, outcome: SaveOutcome): void {
    const iq = entry.held.item.image_query_id;
    if (outcome.stored) {
      entry.saved = true;
      entry.settle(true);
      if (this.lastAction?.startsWith(`${entry.label} `) && this.lastAction.includes(iq)) {
        this.lastAction = `${entry.label} saved for ${iq}`;
      }
      this.emit();
      return;
    }
    if (outcome.kind === "auth") {
      // Kept, not dropped: sent again once the reviewer has signed in (`resume`).
      this.signInNeeded = true;
      this.awaitingSignIn.push(entry);
      this.lastAction = `${entry.label} for ${iq} NOT saved yet: sign in again to send it`;
      this.emit();
      return;
    }
    this.labeled -= 1;
    entry.settle(false);
    const index = this.answered.indexOf(entry);
    // An undo that took this entry already puts the item back on screen.
    if (index < 0) return;
    this.answered.splice(index, 1);
    if (this.current) this.buffer.unshift(this.current);
    const direct = outcome.status === 409;
    this.current = { ...entry.held, failure: { label: entry.label, message: outcome.message, direct, rois: entry.rois } };
    this.error = `${entry.label} for ${iq} was NOT saved (${outcome.message}). The item is back on screen: answer it again.`;
    this.lastAction = `${entry.label} NOT saved for ${iq}`;
    this.onShow?.(this.current.item);
    this.emit();
  }

  /** Pass the item on screen back to the queue and show the next one. */
  skip(): boolean {
    const held = this.current;
    if (!held || this.undoing) return false;
    this.track(this.backend.skip(held.item.id)).then(
      () => {
        if (this.remaining !== null) this.remaining += 1;
        this.emit();
      },
      (error: unknown) => {
        this.error = `Skipping ${held.item.image_query_id} failed (${message(error)}); its claim will expire on its own.`;
        this.emit();
      },
    );
    this.releaseUrl(held.imageUrl);
    this.skipped += 1;
    this.error = null;
    this.lastAction = `Skipped ${held.item.image_query_id}`;
    this.answeredOne();
    this.advance();
    void this.refill();
    return true;
  }

  /** Take back the last label: the item returns to the screen, claimed again. */
  async undo(): Promise<boolean> {
    const last = this.answered.at(-1);
    if (!last || this.undoing) return false;
    this.answered.pop();
    this.undoing = true;
    this.emit();
    const generation = this.generation;
    let item = last.held.item;
    try {
      const stored = await last.stored;
      // A label the cloud refused needs no undo: the item is shown again to be relabeled.
      if (stored) {
        item = await this.backend.undo(last.held.item.id);
        last.held.epoch = this.epoch;
        this.labeled -= 1;
      }
    } catch (error) {
      this.undoing = false;
      this.error = `Undo of ${last.held.item.image_query_id} failed (${message(error)}).`;
      this.releaseUrl(last.held.imageUrl);
      this.emit();
      return false;
    }
    this.undoing = false;
    if (generation !== this.generation || this.disposed) {
      this.releaseUrl(last.held.imageUrl);
      return false;
    }
    if (this.current) this.buffer.unshift(this.current);
    this.current = { ...last.held, item };
    this.error = null;
    this.lastAction = `Undid ${last.label} for ${item.image_query_id}`;
    this.onShow?.(item);
    this.emit();
    void this.peek();
    return true;
  }

  /** Remember a write until it settles, so that claims can wait for it. */
  private track<T>(request: Promise<T>): Promise<T> {
    this.writes.add(request);
    const forget = () => this.writes.delete(request);
    request.then(forget, forget);
    return request;
  }

  /** Tell the look-ahead an answer was given, and whether anything was ready to show next. */
  private answeredOne(): void {
    // Lent one item at a time, nothing can be claimed ahead however fast the reviewer is.
    if (!this.oneAtATime) this.lookAhead.answered(this.buffer.length === 0 && !this.exhausted);
  }

  private advance(): void {
    this.current = this.buffer.shift() ?? null;
    if (this.current) this.onShow?.(this.current.item);
    this.emit();
  }

  /** Items claimed for this reviewer: on screen, in line, or with their image still loading. */
  private heldCount(): number {
    return this.buffer.length + (this.current ? 1 : 0) + this.arriving.size;
  }

  private isHeld(itemId: string): boolean {
    return this.current?.item.id === itemId || this.arriving.has(itemId) || this.buffer.some((held) => held.item.id === itemId);
  }

  /** Claim and preload until the look-ahead's depth of items waits behind the one on screen. */
  private refill(): Promise<void> {
    if (this.disposed || this.signInNeeded) return this.refillRun;
    if (this.claiming) {
      this.wakeFill();
      return this.refillRun;
    }
    const generation = this.generation;
    this.claiming = true;
    // Runs one after another: an older run (from before a filter change) gives back what it
    // claimed late before this one claims, or the cloud could hand that item back to us.
    this.refillRun = this.refillRun.then(() => this.fill(generation));
    return this.refillRun;
  }

  private wanted(): number {
    return 1 + (this.oneAtATime ? 0 : this.lookAhead.depth);
  }

  private woken(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }

  private wakeFill(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async fill(generation: number): Promise<void> {
    const claims = new Set<Promise<unknown>>();
    const loads = new Set<Promise<unknown>>();
    let stopped = false;
    const live = () => generation === this.generation && !this.disposed;
    try {
      while (live()) {
        const room = this.wanted() - this.heldCount() - claims.size;
        const parallel = this.aheadHonoured && !this.oneAtATime ? PARALLEL_CLAIMS : 1;
        if (!stopped && !this.exhausted && !this.signInNeeded && room > 0 && claims.size < parallel) {
          // A plain claim may answer with an item whose label or skip is still in flight, so it
          // waits for them; an `ahead` claim to a cloud that honours it never does, and need not.
          const ahead = this.aheadHonoured || this.heldCount() + claims.size > 0;
          if (this.releases.size > 0 || (this.writes.size > 0 && (this.oneAtATime || !ahead))) {
            await Promise.race([Promise.allSettled([...this.writes]), this.woken()]);
            continue;
          }
          const claim = this.claimOne(generation, ahead, loads).then((more) => {
            if (!more) stopped = true;
          });
          claims.add(claim);
          void claim.finally(() => claims.delete(claim));
          continue;
        }
        if (claims.size + loads.size === 0) break;
        await Promise.race([...claims, ...loads, this.woken()]);
      }
      // After a filter change, this run ends only once what it claimed late is given back.
      await Promise.allSettled([...claims, ...loads]);
    } finally {
      if (generation === this.generation) this.claiming = false;
    }
    if (!live()) return;
    if (this.exhausted) this.schedulePoll();
    this.emit();
    this.maybePeek();
  }

  /**
   * Claim one item; its image loads (tracked in `loads`) while the next claim goes out.
   * Resolves false when claiming should stop: the queue is empty, the claim failed, or the
   * cloud answered with an item already held (it lends one at a time).
   */
  private async claimOne(generation: number, ahead: boolean, loads: Set<Promise<unknown>>): Promise<boolean> {
    const startedAt = this.now();
    const epoch = this.epoch;
    let item: ReviewItem | null;
    try {
      item = await this.backend.claim(this.detectorId, ahead);
    } catch (error) {
      if (generation === this.generation) {
        if (failureKind(error) === "auth") this.signInNeeded = true;
        else {
          this.fatal = `Could not claim the next item: ${message(error)}`;
          this.schedulePoll();
        }
        this.emit();
      }
      return false;
    }
    if (generation !== this.generation) {
      if (item) this.giveBack(item.id);
      return false;
    }
    if (item === null) {
      this.exhausted = true;
      return false;
    }
    if (this.isHeld(item.id)) {
      this.oneAtATime = true;
      return false;
    }
    if (ahead && this.heldCount() > 0) this.aheadHonoured = true;
    this.arriving.add(item.id);
    this.claimsSincePeek += 1;
    this.claimed += 1;
    const load = this.arrive({ item, imageUrl: null, imageError: null, epoch, order: this.claimed }, generation, startedAt);
    loads.add(load);
    void load.finally(() => loads.delete(load));
    return true;
  }

  /** Put a claimed item in line once its image is in memory (or failed to load). */
  private async arrive(held: HeldItem, generation: number, startedAt: number): Promise<void> {
    const { item } = held;
    const { imageUrl, imageError } = await this.image(item);
    this.arriving.delete(item.id);
    if (generation !== this.generation) {
      this.releaseUrl(imageUrl);
      this.giveBack(item.id);
      return;
    }
    this.lookAhead.refilled(this.now() - startedAt);
    this.givenBack.delete(item.id);
    if (this.remaining !== null) this.remaining = Math.max(0, this.remaining - 1);
    // In claim order (the cloud's: oldest first), behind any item that came back on screen.
    const order = held.order ?? 0;
    const behind = this.buffer.findIndex((other) => (other.order ?? 0) > order);
    this.buffer.splice(behind < 0 ? this.buffer.length : behind, 0, { ...held, imageUrl, imageError });
    this.fatal = null;
    if (!this.current) this.advance();
    else this.emit();
    // A long run of claims (a fast reviewer) looks ahead now and then, not only at its end.
    if (this.claimsSincePeek >= PEEK_EVERY) void this.peek();
  }

  /**
   * Look ahead again only when the preloaded images run low (or now and then, to keep the
   * counter true): fewer requests competing with the reviewer's next label.
   */
  private maybePeek(): void {
    if (this.peeking) return;
    if (this.exhausted || this.preloaded.size < this.lookAhead.depth || this.claimsSincePeek >= PEEK_EVERY) void this.peek();
  }

  /** The item's image: from the preloaded ones when it was peeked at, else downloaded now. */
  private async image(item: ReviewItem): Promise<{ imageUrl: string | null; imageError: string | null }> {
    const early = this.preloaded.take(item.image_query_id);
    try {
      const imageUrl = (early ? await early : null) ?? (await this.backend.loadImage(item));
      return { imageUrl, imageError: null };
    } catch (error) {
      return { imageUrl: null, imageError: `The image could not be loaded (${message(error)}); skip it with S.` };
    }
  }

  /** Look at the next open items: update the counter and download their images ahead. */
  private async peek(): Promise<void> {
    if (this.disposed) return;
    if (this.peeking) {
      this.peekAgain = true;
      return;
    }
    this.peeking = true;
    const generation = this.generation;
    try {
      this.claimsSincePeek = 0;
      const depth = this.lookAhead.depth + 2;
      const { count, items } = await this.backend.peek(this.detectorId, depth + 1);
      if (generation !== this.generation) return;
      this.remaining = count;
      this.preloaded.keepOnly(items.filter((item) => !this.isHeld(item.id)).slice(0, depth));
    } catch {
      // The counter is a convenience: keep the last one and try again after the next answer.
    } finally {
      this.peeking = false;
      this.emit();
      if (this.peekAgain) {
        this.peekAgain = false;
        void this.peek();
      }
    }
  }

  private schedulePoll(): void {
    if (this.pollTimer !== null || this.disposed || this.signInNeeded) return;
    this.pollTimer = setTimeout(() => {
      this.pollTimer = null;
      this.exhausted = false;
      void this.refill();
    }, this.pollMs);
  }

  private clearPoll(): void {
    if (this.pollTimer !== null) clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  private trimUndo(): void {
    // Only stored labels leave the undo list: one still saving may have to come back.
    while (this.answered.length > this.undoDepth && this.answered[0].saved) {
      const dropped = this.answered.shift();
      if (dropped) this.releaseUrl(dropped.held.imageUrl);
    }
  }

  private releaseHeld(): void {
    const held = [...(this.current ? [this.current] : []), ...this.buffer];
    this.current = null;
    this.buffer = [];
    this.clearPoll();
    for (const entry of held) {
      this.releaseUrl(entry.imageUrl);
      this.giveBack(entry.item.id);
    }
    // Claimed, image still loading: given back now (the page may be closing), not when it loads.
    const arriving = [...this.arriving];
    this.arriving.clear();
    for (const itemId of arriving) this.giveBack(itemId);
  }

  /** Release an item this session claimed but will not show; each item once. */
  private giveBack(itemId: string): void {
    if (this.isHeld(itemId) || this.givenBack.has(itemId)) return;
    this.givenBack.add(itemId);
    if (this.givenBack.size > 200) this.givenBack.delete(this.givenBack.values().next().value as string);
    // Tracked: the next claim must wait, or the cloud could hand this item back mid-release.
    const release = this.track(this.backend.release(itemId));
    this.releases.add(release);
    const forget = () => {
      this.releases.delete(release);
      this.wakeFill();
    };
    release.then(forget, forget);
  }

  private releaseUrl(url: string | null): void {
    if (url) this.backend.releaseImage(url);
  }

  private phase(): ReviewPhase {
    if (this.current) return "ready";
    if (this.fatal) return "error";
    if (!this.started || this.claiming || !this.exhausted || this.undoing) return "loading";
    return "empty";
  }

  private buildSnapshot(): ReviewSnapshot {
    return {
      phase: this.phase(),
      current: this.current,
      ahead: this.buffer.length,
      canUndo: this.answered.length > 0 && !this.undoing,
      busy: this.undoing,
      remaining: this.remaining,
      labeled: this.labeled,
      skipped: this.skipped,
      lastAction: this.lastAction,
      error: this.fatal ?? this.error,
      detectorId: this.detectorId,
      unsaved: this.answered.filter((entry) => !entry.saved).length,
      signInNeeded: this.signInNeeded,
    };
  }

  private emit(): void {
    if (this.disposed) return;
    this.snapshot = this.buildSnapshot();
    for (const listener of this.listeners) listener();
  }
}
