/**
 * How many items the review session keeps claimed behind the one on screen.
 *
 * Two by default: enough for a reviewer who looks at each image, and few enough that a
 * reviewer who leaves holds little that others could take. A reviewer who answers faster
 * than a refill takes (claim plus image download: two round trips to a far-away cloud),
 * or who found nothing ready after an answer, gets one more, up to `max`. The depth never
 * shrinks within a session: a reviewer who was fast once will be again, and what is held
 * goes back to the queue when the page is left.
 */
export class LookAhead {
  private current: number;
  private refillMs: number | null = null;
  private lastAnswerAt: number | null = null;

  constructor(
    min: number,
    private readonly max: number,
    private readonly now: () => number,
  ) {
    this.current = Math.max(0, Math.min(min, max));
  }

  get depth(): number {
    return this.current;
  }

  /** A claim took `ms` from its request until its image was in memory. */
  refilled(ms: number): void {
    // Smoothed, so that one slow answer does not deepen the look-ahead by itself.
    this.refillMs = this.refillMs === null ? ms : 0.7 * this.refillMs + 0.3 * ms;
  }

  /** The reviewer answered; `starved`: no item was ready to take the screen. */
  answered(starved: boolean): void {
    const at = this.now();
    const pace = this.lastAnswerAt === null ? null : at - this.lastAnswerAt;
    this.lastAnswerAt = at;
    const outran = starved || (pace !== null && this.refillMs !== null && pace < this.refillMs);
    if (outran) this.current = Math.min(this.max, this.current + 1);
  }
}
