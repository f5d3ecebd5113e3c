/**
 * The models page's edge-learning charts in jsdom, against the cloud's routes in memory:
 * the points come from the edge-learning stats, and an empty detector says what to do.
 */
import { cleanup, render, screen, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Client } from "../api/client";
import type { EdgeLearning, Me, ModelVersion } from "../api/types";
import { SessionContext } from "../auth";
import { ModelsPage } from "./ModelsPage";

const me: Me = { email: "a@x", username: "ada", group: null, is_superuser: false, role: "admin", account_id: 1 };

const version: ModelVersion = {
  id: "mdl_1",
  detector_id: "det_1",
  version: 1,
  status: "active",
  trainer: "fast",
  created_at: "2026-01-01T00:00:00Z",
  metrics: { accuracy: 0.9, balanced_accuracy: 0.88, confident_coverage: 0.7, confident_accuracy: 0.95 },
  training_set_size: 40,
  class_counts: { YES: 20, NO: 20 },
  decision: null,
};

function bucket(start: string, labels: number, queries: number, edgeAnswers: number, compared: number, agreed: number) {
  return {
    start,
    labels,
    queries,
    edge_answers: edgeAnswers,
    edge_answer_rate: queries ? edgeAnswers / queries : null,
    compared,
    agreed,
    edge_accuracy: compared ? agreed / compared : null,
  };
}

const requested: string[] = [];

function renderPage(learning: EdgeLearning, models: ModelVersion[] = []) {
  requested.length = 0;
  const json = (body: unknown) => new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
  vi.stubGlobal("fetch", async (input: RequestInfo | URL) => {
    const url = new URL(String(input), "http://ui.test");
    requested.push(`${url.pathname}${url.search}`);
    if (url.pathname === "/v1/detectors/det_1") return json({ id: "det_1", name: "weld", query: "OK?", created_at: "", confidence_threshold: 0.9, mode: "BINARY" });
    if (url.pathname === "/v1/detectors/det_1/models") return json(models);
    if (url.pathname === "/v1/training-jobs") return json([]);
    if (url.pathname === "/v1/detectors/det_1/stats/edge-learning") return json(learning);
    return new Response(JSON.stringify({ detail: `no route ${url.pathname}` }), { status: 404 });
  });
  return render(
    <SessionContext.Provider value={{ client: new Client("tok"), me, signOut: () => undefined }}>
      <ModelsPage detectorId="det_1" />
    </SessionContext.Provider>,
  );
}

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

describe("ModelsPage edge learning", () => {
  it("plots answer rate, accuracy and labels from the edge-learning stats", async () => {
    renderPage({
      detector_id: "det_1",
      bucket: "hour",
      buckets: [bucket("2026-01-01T10:00:00Z", 0, 10, 4, 0, 0), bucket("2026-01-01T12:00:00Z", 12, 20, 16, 4, 3)],
    });
    const section = await screen.findByTestId("edge-learning");
    expect(requested).toContain("/v1/detectors/det_1/stats/edge-learning?days=30");
    const rates = within(section).getByRole("img", { name: "Edge answer rate and accuracy, per hour" });
    const tips = Array.from(rates.querySelectorAll("circle title")).map((t) => t.textContent);
    expect(tips.filter((t) => t?.startsWith("answered on the edge")).map((t) => t?.split(": ")[1])).toEqual(["40 %", "80 %"]);
    // The first hour has no labeled edge answer: no accuracy point there, not a zero.
    expect(tips.filter((t) => t?.startsWith("edge answer agrees")).map((t) => t?.split(": ")[1])).toEqual(["75 %"]);
    const labels = within(section).getByRole("img", { name: "Human labels in the training set" });
    expect(Array.from(labels.querySelectorAll("circle title")).map((t) => t.textContent?.split(": ")[1])).toEqual(["0", "12"]);
    expect(within(section).getByText(/Accuracy from 4 labeled edge answers/)).toBeTruthy();
  });

  it("says what to do when no edge has reported", async () => {
    renderPage({ detector_id: "det_1", bucket: "hour", buckets: [] });
    await screen.findByText("No edge data for this detector yet.");
    expect(screen.queryByTestId("edge-learning")).toBeNull();
  });

  it("says there is no accuracy yet when no edge answer was labeled", async () => {
    renderPage({ detector_id: "det_1", bucket: "day", buckets: [bucket("2026-01-01T00:00:00Z", 5, 100, 90, 0, 0)] });
    const section = await screen.findByTestId("edge-learning");
    expect(within(section).getByRole("img", { name: "Edge answer rate and accuracy, per day" })).toBeTruthy();
    expect(within(section).getByText(/no accuracy to plot/)).toBeTruthy();
  });

  it("keeps each version's validation metrics under their own title", async () => {
    renderPage({ detector_id: "det_1", bucket: "hour", buckets: [] }, [version]);
    await screen.findByRole("img", { name: "Validation metrics of each version by training-set size" });
    expect(screen.queryByText("Edge answer rate and accuracy as labels grew")).toBeNull();
  });
});
