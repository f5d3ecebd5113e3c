/** The viewer's arithmetic (fit, zoom about a point) and its overlay of boxes. */
import { cleanup, render } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { ImageViewer, INITIAL_VIEW, fitSize, zoomAt } from "./ImageViewer";
import { againstThreshold, answerOrigin } from "./answer";

afterEach(cleanup);

describe("ImageViewer", () => {
  it("fits the image to the frame, scaling a small one up", () => {
    expect(fitSize({ w: 320, h: 240 }, { w: 900, h: 730 })).toEqual({ w: 900, h: 675 });
    expect(fitSize({ w: 4000, h: 1000 }, { w: 800, h: 600 })).toEqual({ w: 800, h: 200 });
  });

  it("zooms about the point under the cursor and back to the whole image at 1x", () => {
    const zoomed = zoomAt(INITIAL_VIEW, 2, { x: 100, y: -50 });
    // The point under the cursor stays put: 100 = x + 2 * (100 - x) / 2 ... i.e. x = -100.
    expect(zoomed).toMatchObject({ zoom: 2, x: -100, y: 50 });
    expect(zoomAt(zoomed, 0.5, { x: 0, y: 0 })).toMatchObject({ zoom: 1, x: 0, y: 0 });
    expect(zoomAt(zoomed, 1000, { x: 0, y: 0 }).zoom).toBe(16);
  });

  it("draws the query's rois while the overlay is on, and nothing when off", () => {
    const rois = [{ label: "crack", score: 0.9, geometry: { left: 0.1, top: 0.2, right: 0.4, bottom: 0.5 } }];
    const { container, rerender } = render(<ImageViewer src="blob:x" alt="x" view={INITIAL_VIEW} onView={() => undefined} rois={rois} />);
    const rect = container.querySelector("[data-testid=rois] rect");
    expect(rect?.getAttribute("x")).toBe("0.1");
    expect(Number(rect?.getAttribute("width"))).toBeCloseTo(0.3);
    expect(rect?.textContent).toBe("crack 90 %");
    rerender(<ImageViewer src="blob:x" alt="x" view={{ ...INITIAL_VIEW, overlay: false }} onView={() => undefined} rois={rois} />);
    expect(container.querySelector("[data-testid=rois]")).toBeNull();
  });
});

describe("answer", () => {
  it("tells edge, cloud model, person and waiting apart from the wire fields", () => {
    expect(answerOrigin({ label: "YES", source: "ALGORITHM", from_edge: true })).toBe("edge");
    expect(answerOrigin({ label: "YES", source: "ALGORITHM", from_edge: false })).toBe("cloud model");
    expect(answerOrigin({ label: "NO", source: "USER" })).toBe("human");
    expect(answerOrigin({ label: "UNCLEAR", source: "STILL_PROCESSING" })).toBe("waiting");
    expect(answerOrigin(null)).toBe("waiting");
    expect(againstThreshold(0.523, 0.9)).toBe("below the 90 % threshold");
    expect(againstThreshold(0.95, 0.9)).toBe("at or above the 90 % threshold");
  });
});
