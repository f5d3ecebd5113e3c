/** The compare table and the model facts an admin decides on, with the metrics the worker really writes. */
import { cleanup, render } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import type { ModelCompare, ModelVersion } from "../api/types";
import { CompareTable } from "./ModelCompare";
import { decisionText, nearChance, smoothedEta, triggerText } from "./modelFacts";

afterEach(cleanup);

function version(n: number, balanced: number, extra: Record<string, unknown> = {}): ModelVersion {
  const ids = Array.from({ length: 13 }, (_, i) => `iq_${n}_${i}`);
  return {
    id: `mv_${n}`,
    detector_id: "det_1",
    version: n,
    status: n === 1 ? "active" : "candidate",
    trainer: "fast",
    created_at: "2026-01-01T00:00:00Z",
    training_set_size: 13 * n,
    class_counts: { NO: 7 * n, YES: 6 * n },
    decision: n === 1 ? { action: "ACTIVATE", reason: "no active version to compare with", at: "2026-01-01T00:00:00Z" } : { action: "CANDIDATE", reason: "promotion policy is manual (new version better)", at: "2026-01-02T00:00:00Z" },
    metrics: {
      accuracy: balanced,
      balanced_accuracy: balanced,
      confident_coverage: 0.4,
      confident_accuracy: 0.9,
      per_class_recall: { NO: balanced + 0.05, YES: balanced - 0.05 },
      support: { NO: 7, YES: 6 },
      threshold: 0.9,
      evaluation: { method: "cv", folds: 3, image_query_ids: ids },
      comparison: { active_version: 1, image_query_ids: ids.slice(0, 3), new: { accuracy: 0.8 }, active: { accuracy: 0.6 } },
      promotion: { action: "CANDIDATE", reason: "manual policy" },
      skipped_labels: { UNCLEAR: 2 },
      ...extra,
    },
  };
}

describe("CompareTable", () => {
  it("renders every field readably, nested ones as per-class rows and tables", () => {
    const comparison: ModelCompare = { a: version(1, 0.538), b: version(2, 0.84), metric_deltas: { accuracy: 0.302, balanced_accuracy: 0.302 } };
    const { container } = render(<CompareTable comparison={comparison} />);
    const text = container.textContent ?? "";
    expect(text).not.toContain("[object Object]");
    for (const field of ["per class recall", "support", "evaluation", "comparison", "promotion", "skipped labels", "labels per class"]) {
      expect(text).toContain(field);
    }
    const rows = Array.from(container.querySelectorAll("tr")).map((tr) => Array.from(tr.children).map((td) => td.textContent));
    expect(rows).toContainEqual(["YES", "48.8 %", "79.0 %", "+30.2 pt"]);
    expect(rows).toContainEqual(["balanced accuracy", "53.8 %", "84.0 %", "+30.2 pt"]);
    expect(text).toContain("13 items: iq_1_0");
    expect(text).toContain("manual policy");
    expect(text).toContain("kept as a candidate (not activated): promotion policy is manual");
    // v1 is at chance: flagged in the table.
    expect(text).toContain("near chance");
  });
});

describe("model facts", () => {
  it("flags a version near chance and not a good one", () => {
    expect(nearChance(version(1, 0.538))).toContain("near chance (50 %)");
    expect(nearChance(version(2, 0.84))).toBeNull();
    const three = { ...version(3, 0.4), class_counts: { a: 1, b: 1, c: 1 } };
    expect(nearChance(three)).toContain("(33 %)");
  });

  it("says what the promotion decided and who started the job", () => {
    expect(decisionText({ action: "ACTIVATE", reason: "better", at: "" }, "active")).toBe("activated: better");
    expect(decisionText(null, "candidate")).toBe("no decision recorded");
    expect(triggerText("manual")).toBe("started by hand");
    expect(triggerText(null)).toBeNull();
  });

  it("smooths the ETA over the whole run and gives none too early", () => {
    const start = "2026-01-01T00:00:00Z";
    const t0 = Date.parse(start);
    expect(smoothedEta(0.02, start, t0 + 10_000, 1)).toBeNull();
    expect(smoothedEta(0.1, start, t0 + 2_000, 1)).toBeNull();
    // 10 % in 20 s: 180 s left by the rate, whatever a jumpy report says.
    expect(smoothedEta(0.1, start, t0 + 20_000, null)).toBeCloseTo(180);
    expect(smoothedEta(0.5, start, t0 + 60_000, 40)).toBeCloseTo(50);
  });
});
