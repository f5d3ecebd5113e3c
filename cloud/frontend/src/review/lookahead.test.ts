import { describe, expect, it } from "vitest";
import { LookAhead } from "./lookahead";

describe("LookAhead", () => {
  it("stays at its first depth for a reviewer slower than the refill", () => {
    let t = 0;
    const ahead = new LookAhead(2, 4, () => t);
    ahead.refilled(600);
    for (let n = 0; n < 10; n += 1) {
      t += 1000;
      ahead.answered(false);
    }
    expect(ahead.depth).toBe(2);
  });

  it("deepens by one per answer given faster than a refill takes, up to its bound", () => {
    let t = 0;
    const ahead = new LookAhead(2, 4, () => t);
    ahead.refilled(600);
    ahead.answered(false); // the first answer has no pace yet
    expect(ahead.depth).toBe(2);
    t += 100;
    ahead.answered(false);
    expect(ahead.depth).toBe(3);
    for (let n = 0; n < 5; n += 1) {
      t += 100;
      ahead.answered(false);
    }
    expect(ahead.depth).toBe(4);
  });

  it("deepens when an answer found nothing ready, even before any refill was timed", () => {
    const ahead = new LookAhead(2, 4, () => 0);
    ahead.answered(true);
    expect(ahead.depth).toBe(3);
  });

  it("smooths the refill time: one slow claim does not make a steady reviewer look fast", () => {
    let t = 0;
    const ahead = new LookAhead(2, 4, () => t);
    for (let n = 0; n < 5; n += 1) ahead.refilled(400);
    ahead.refilled(2000); // one stall: smoothed to about 880 ms
    ahead.answered(false);
    t += 1000;
    ahead.answered(false);
    expect(ahead.depth).toBe(2);
  });

  it("never goes above the bound, nor below zero", () => {
    expect(new LookAhead(6, 4, () => 0).depth).toBe(4);
    expect(new LookAhead(-1, 4, () => 0).depth).toBe(0);
  });
});
