/**
 * The review page in jsdom, against an in-memory cloud behind `fetch`: key presses on
 * the page become the right API calls for the item on screen.
 */
import { act, cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { useState } from "react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { resetCloudRoutes } from "../api/capabilities";
import { Client } from "../api/client";
import type { Me, ReviewItem } from "../api/types";
import { SessionContext } from "../auth";
import { ReviewPage } from "./ReviewPage";

const me: Me = { email: "r@x", username: "rita", group: null, is_superuser: false, role: "reviewer", account_id: 1 };

function item(n: number, mode = "BINARY", classNames: string[] | null = null): ReviewItem {
  return {
    id: `rvw_${n}`,
    image_query_id: `iq_${n}`,
    detector_id: "det_1",
    detector_name: "weld",
    query: `Question ${n}?`,
    mode,
    class_names: classNames,
    reason: "low_confidence",
    edge_answer: { label: "YES", confidence: 0.61, from_edge: true, source: "ALGORITHM" },
    image_url: `/v1/image-queries/iq_${n}/image`,
    created_at: "2026-01-01T00:00:00Z",
    status: "pending",
    claimed_by: null,
    claim_expires_at: null,
    label: null,
  };
}

/** The cloud's review routes in memory, with its one-item-at-a-time claims. */
class FakeCloud {
  open: ReviewItem[];
  held: ReviewItem | null = null;
  labeled = new Map<string, string>();
  calls: string[] = [];
  /** Tokens the cloud refuses (a revoked one). */
  refused = new Set<string>();
  /** The active model's kind, for the overlay route ("anomaly": heat maps exist); null: no model. */
  modelKind: string | null = null;
  overlays: string[] = [];

  constructor(items: ReviewItem[]) {
    this.open = [...items];
  }

  json(body: unknown, status = 200): Response {
    return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
  }

  fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input), "http://ui.test");
    const method = init?.method ?? "GET";
    const path = url.pathname;
    const token = (init?.headers as Record<string, string> | undefined)?.["x-api-token"];
    if (token && this.refused.has(token)) return this.json({ detail: "Invalid API token.", code: "unauthorized" }, 401);
    if (path === "/v1/labels" && method === "POST") {
      const body = JSON.parse(String(init?.body)) as { image_query_id: string; label: string };
      this.calls.push(`labels ${body.image_query_id}`);
      this.labeled.set(body.image_query_id.replace("iq_", "rvw_"), body.label);
      if (this.held?.image_query_id === body.image_query_id) this.held = null;
      return this.json({ label: body.label }, 201);
    }
    if (method === "POST") this.calls.push(`${path.replace("/v1/review/", "")}${init?.body ? ` ${init.body}` : ""}`);
    if (path === "/openapi.json") return this.json({ paths: { "/v1/image-queries/{image_query_id}/overlay": {} } });
    if (path === "/v1/detectors/det_1/stats") return this.json({ active_model_version: this.modelKind ? 1 : null });
    if (path === "/v1/detectors/det_1/models") {
      return this.json([{ version: 1, status: "active", primary_pipeline_config: this.modelKind === "classifier" ? {} : { model_kind: this.modelKind } }]);
    }
    const overlay = path.match(/^\/v1\/image-queries\/(\w+)\/overlay$/);
    if (overlay) {
      this.overlays.push(overlay[1]);
      return new Response("png", { headers: { "content-type": "image/png" } });
    }
    const query = path.match(/^\/v1\/image-queries\/(\w+)$/);
    if (query) return this.json({ id: query[1], confidence_threshold: 0.9, result: null, rois: null });
    if (path === "/v1/review/stats") return this.json({ total_pending: this.open.length, oldest_age_s: 1, per_detector: [] });
    if (path === "/v1/review/queue") return this.json({ count: this.open.length, oldest_age_s: 1, items: this.open.slice(0, Number(url.searchParams.get("limit"))) });
    // A string body: jsdom's Blob cannot be read back through Node's Response.
    if (path.endsWith("/image")) return new Response("jpeg", { headers: { "content-type": "image/jpeg" } });
    if (path === "/v1/review/claim") {
      if (!this.held) this.held = this.open.shift() ?? null;
      return this.held ? this.json(this.held) : new Response(null, { status: 204 });
    }
    const match = path.match(/^\/v1\/review\/items\/(\w+)\/(label|skip|undo)$/);
    if (match) {
      const [, id, action] = match;
      if (action === "undo") {
        const back = item(Number(id.split("_")[1]));
        this.labeled.delete(id);
        this.held = back;
        return this.json(back);
      }
      if (this.held?.id !== id) return this.json({ detail: "not claimed by you", code: "claim" }, 409);
      if (action === "label") this.labeled.set(id, JSON.parse(String(init?.body)).label);
      else this.open.push(this.held);
      this.held = null;
      return this.json(item(Number(id.split("_")[1])));
    }
    return this.json({ detail: `no route ${path}` }, 404);
  };
}

let cloud: FakeCloud;
let urls = 0;

beforeEach(() => {
  resetCloudRoutes();
  urls = 0;
  URL.createObjectURL = vi.fn(() => `blob:test/${(urls += 1)}`);
  URL.revokeObjectURL = vi.fn();
});

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

function renderPage(items: ReviewItem[]) {
  cloud = new FakeCloud(items);
  vi.stubGlobal("fetch", cloud.fetch);
  return render(
    <SessionContext.Provider value={{ client: new Client("tok"), me, signOut: () => undefined }}>
      <ReviewPage />
    </SessionContext.Provider>,
  );
}

/** The page inside a session whose "sign in again" swaps the client, as App does. */
function WithSignIn() {
  const [client, setClient] = useState(() => new Client("old-token"));
  const signInAgain = async (token: string) => {
    setClient(new Client(token));
    return null;
  };
  return (
    <SessionContext.Provider value={{ client, me, signOut: () => undefined, signInAgain }}>
      <ReviewPage />
    </SessionContext.Provider>
  );
}

async function shown(n: number) {
  await waitFor(() => expect(document.querySelector(".review-main")?.getAttribute("data-item-id")).toBe(`rvw_${n}`));
}

function press(key: string, extra: Partial<KeyboardEventInit> = {}) {
  act(() => {
    fireEvent.keyDown(window, { key, ...extra });
  });
}

describe("ReviewPage", () => {
  it("shows the question, the edge answer and why the item is here", async () => {
    renderPage([item(1), item(2)]);
    await shown(1);
    expect(screen.getByText("Question 1?")).toBeTruthy();
    expect(screen.getByText("YES")).toBeTruthy();
    expect(screen.getByText(/61\.0 %/)).toBeTruthy();
    expect(screen.getByText("low confidence")).toBeTruthy();
  });

  it("labels with Y / N / U, undoes with Z and skips with S", async () => {
    renderPage([item(1), item(2), item(3), item(4)]);
    await shown(1);
    press("y");
    await shown(2);
    press("N");
    await shown(3);
    await waitFor(() => expect(cloud.labeled.get("rvw_2")).toBe("NO"));
    press("z");
    await shown(2);
    expect(cloud.labeled.has("rvw_2")).toBe(false);
    press("u");
    await shown(3);
    press("s");
    await shown(4);
    await waitFor(() => expect(cloud.calls).toContain("items/rvw_3/skip"));
    expect(Object.fromEntries(cloud.labeled)).toEqual({ rvw_1: "YES", rvw_2: "UNCLEAR" });
  });

  it("ignores auto-repeat, modifier chords and keys typed in the detector filter", async () => {
    renderPage([item(1), item(2)]);
    await shown(1);
    press("y", { repeat: true });
    press("y", { ctrlKey: true });
    act(() => {
      fireEvent.keyDown(screen.getByLabelText("Detector filter"), { key: "y" });
    });
    press("z");
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(cloud.calls.filter((c) => c.includes("label") || c.includes("undo"))).toEqual([]);
    await shown(1);
  });

  it("answers multi-class items with digit keys", async () => {
    renderPage([item(1, "MULTI_CLASS", ["good", "scratch", "dent"]), item(2)]);
    await shown(1);
    expect(screen.getByText("scratch")).toBeTruthy();
    press("y");
    press("3");
    await shown(2);
    await waitFor(() => expect(cloud.labeled.get("rvw_1")).toBe("dent"));
  });

  it("confirms a box item's pre-labels with Enter and sends a typed count without boxes", async () => {
    const roi = (left: number, right: number) => ({ label: "bolt", score: 0.7, geometry: { left, top: 0.1, right, bottom: 0.3 } });
    const boxes = { ...item(1, "BOUNDING_BOX", ["bolt"]), mode_configuration: { class_name: "bolt", max_num_bboxes: 5 }, rois: [roi(0.1, 0.3)] };
    const counting = { ...item(2, "COUNT", ["bolt"]), mode_configuration: { class_name: "bolt", max_count: 9 }, rois: [roi(0.1, 0.3), roi(0.5, 0.7)] };
    renderPage([boxes, counting, item(3)]);
    await shown(1);
    expect(screen.getByTestId("box-count").textContent).toContain("1 box");
    press("Enter");
    await shown(2);
    expect(screen.getByTestId("box-count").textContent).toContain("2 boxes");
    // Y means nothing here; a digit types the count, which then is the label (boxes left out).
    press("y");
    press("5");
    expect((screen.getByTestId("count-input") as HTMLInputElement).value).toBe("5");
    expect(screen.getByTestId("confirm").textContent).toContain("Count 5");
    press("Enter");
    await shown(3);
    await waitFor(() => expect(cloud.labeled.get("rvw_2")).toBe("5"));
    const bodies = cloud.calls.filter((c) => c.includes("/label ")).map((c) => JSON.parse(c.slice(c.indexOf(" ") + 1)));
    expect(bodies).toEqual([
      { label: "BOUNDING_BOX", rois: [{ label: "bolt", score: 1, geometry: roi(0.1, 0.3).geometry }] },
      { label: "5" },
    ]);
  });

  it("says so when nothing waits, and counts what is left", async () => {
    renderPage([item(1)]);
    await shown(1);
    await waitFor(() => expect(screen.getByTestId("remaining").textContent).toContain("0 waiting"));
    press("n");
    await screen.findByText("Nothing waits for review.");
  });

  it("shows the answering model's version, its score per class and its in-domain score", async () => {
    const scored = {
      ...item(1),
      edge_answer: {
        label: "NO",
        confidence: 0.523,
        from_edge: true,
        source: "EDGE",
        model_version: 7,
        probabilities: { YES: 0.4, NO: 0.6 },
        in_domain_score: 0.31,
      },
    };
    renderPage([scored, item(2)]);
    await shown(1);
    expect(screen.getByTestId("model-version").textContent).toContain("v7 answered");
    const rows = [...screen.getByTestId("class-scores").querySelectorAll("tr")].map((row) => row.textContent);
    expect(rows).toEqual(["NO60.0 %", "YES40.0 %"]); // highest first
    expect(screen.getByTestId("class-scores").querySelector("tr.chosen")?.textContent).toContain("NO");
    expect(screen.getByTestId("in-domain").textContent).toContain("unlike what the model learned from");
  });

  it("names a cloud model's answer as such, and A accepts it", async () => {
    const cloudAnswer = { ...item(1), edge_answer: { label: "NO", confidence: 0.523, from_edge: false, source: "ALGORITHM" } };
    renderPage([cloudAnswer, item(2)]);
    await shown(1);
    expect(screen.getByTestId("answer-origin").textContent).toBe("Cloud model");
    expect(screen.getByTestId("model-answer").textContent).not.toContain("Edge");
    press("a");
    await shown(2);
    await waitFor(() => expect(cloud.labeled.get("rvw_1")).toBe("NO"));
    expect(screen.getByTestId("answer-origin").textContent).toBe("Edge model");
  });

  it("lays the heat map over the image only while an anomaly model is active", async () => {
    renderPage([item(1), item(2)]);
    cloud.modelKind = "anomaly";
    await shown(1);
    await waitFor(() => expect(document.querySelector(".viewer-overlay")).not.toBeNull());
    expect(cloud.overlays).toEqual(["iq_1"]);
    press("o");
    expect(document.querySelector(".viewer-overlay")).toBeNull();
    cleanup();
    // A classifier is active: the overlay route would refuse it, so nothing is asked.
    renderPage([item(3)]);
    cloud.modelKind = "classifier";
    await shown(3);
    await waitFor(() => expect(screen.getByTestId("model-version").textContent).toContain("v1 active now"));
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(cloud.overlays).toEqual([]);
    expect(document.querySelector(".viewer-overlay")).toBeNull();
  });

  it("says n of N for the session", async () => {
    renderPage([item(1), item(2), item(3)]);
    await shown(1);
    await waitFor(() => expect(screen.getByTestId("progress").textContent).toBe("Item 1 of 3"));
    press("y");
    await shown(2);
    await waitFor(() => expect(screen.getByTestId("progress").textContent).toBe("Item 2 of 3"));
  });

  it("shows a refused label on its item at once, and saves it when answered again", async () => {
    renderPage([item(1), item(2)]);
    await shown(1);
    cloud.held = null; // the claim expired: the cloud answers 409
    press("y");
    await screen.findByTestId("item-failure");
    await shown(1);
    expect(screen.getByTestId("item-failure").textContent).toContain("YES was NOT saved");
    expect(screen.getByTestId("last-action").textContent).toBe("YES NOT saved for iq_1");
    press("n");
    await waitFor(() => expect(cloud.labeled.get("rvw_1")).toBe("NO"));
    expect(cloud.calls).toContain("labels iq_1");
  });

  it("asks to sign in again on a 401 and sends the waiting label with the new token", async () => {
    cloud = new FakeCloud([item(1), item(2), item(3)]);
    vi.stubGlobal("fetch", cloud.fetch);
    render(<WithSignIn />);
    await shown(1);
    cloud.refused.add("old-token");
    press("y");
    const form = await screen.findByRole("form", { name: "Sign in again" });
    expect(form.textContent).toContain("1 label is kept");
    expect(cloud.labeled.size).toBe(0);
    fireEvent.change(screen.getByLabelText("API token"), { target: { value: "new-token" } });
    fireEvent.submit(form);
    await waitFor(() => expect(cloud.labeled.get("rvw_1")).toBe("YES"));
    await waitFor(() => expect(screen.queryByRole("form", { name: "Sign in again" })).toBeNull());
  });
});
