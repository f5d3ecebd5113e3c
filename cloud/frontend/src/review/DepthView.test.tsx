/** The depth view: D toggles it, it is fetched only while on, a query without depth says so. */
import { act, cleanup, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError } from "../api/client";
import { DepthHint, depthColourPath, useDepthView, type DepthView } from "./DepthView";
import { commandForKey } from "./keys";

afterEach(() => {
  cleanup();
  vi.restoreAllMocks();
});

/** A client whose depth views are object URLs, and 404 for queries sent without depth. */
function fakeClient(withDepth: Set<string>) {
  const asked: string[] = [];
  const client = {
    imageObjectUrl: (path: string) => {
      asked.push(path);
      const id = path.split("/")[3];
      return withDepth.has(id) ? Promise.resolve(`blob:depth-${id}`) : Promise.reject(new ApiError(404, "no depth", "no_depth"));
    },
  };
  return { client, asked };
}

function Probe({ client, id, on, seen }: { client: ReturnType<typeof fakeClient>["client"]; id?: string; on: boolean; seen: (view: DepthView) => void }) {
  const view = useDepthView(client, id, on);
  seen(view);
  return <DepthHint state={view.state} />;
}

async function settle() {
  await act(async () => {
    await Promise.resolve();
  });
}

describe("useDepthView", () => {
  it("asks for nothing until D turns it on, then shows the false-colour view in place of the image", async () => {
    const revoked = vi.spyOn(URL, "revokeObjectURL").mockImplementation(() => undefined);
    const { client, asked } = fakeClient(new Set(["iq_a"]));
    let last: DepthView | null = null;
    const seen = (view: DepthView) => (last = view);
    const { rerender } = render(<Probe client={client} id="iq_a" on={false} seen={seen} />);
    await settle();
    expect(asked).toEqual([]);
    expect(last).toEqual({ src: null, state: "off" });
    expect(screen.getByTestId("depth-hint").textContent).toBe("D depth off");

    rerender(<Probe client={client} id="iq_a" on={true} seen={seen} />);
    expect(last).toEqual({ src: null, state: "loading" });
    await settle();
    expect(asked).toEqual([depthColourPath("iq_a")]);
    expect(asked[0]).toBe("/v1/image-queries/iq_a/depth?view=colour");
    expect(last).toEqual({ src: "blob:depth-iq_a", state: "shown" });

    rerender(<Probe client={client} id="iq_a" on={false} seen={seen} />);
    expect(last).toEqual({ src: null, state: "off" });
    expect(revoked).toHaveBeenCalledWith("blob:depth-iq_a"); // no object URL outlives the view
  });

  it("stays on from item to item and says when an image came without a depth map", async () => {
    vi.spyOn(URL, "revokeObjectURL").mockImplementation(() => undefined);
    const { client, asked } = fakeClient(new Set(["iq_a"]));
    let last: DepthView | null = null;
    const seen = (view: DepthView) => (last = view);
    const { rerender } = render(<Probe client={client} id="iq_a" on={true} seen={seen} />);
    await settle();
    expect(last).toEqual({ src: "blob:depth-iq_a", state: "shown" });

    rerender(<Probe client={client} id="iq_b" on={true} seen={seen} />);
    expect(last).toEqual({ src: null, state: "loading" }); // never the last item's map over this image
    await settle();
    expect(asked).toEqual([depthColourPath("iq_a"), depthColourPath("iq_b")]);
    expect(last).toEqual({ src: null, state: "none" });
    expect(screen.getByTestId("depth-hint").textContent).toBe("D depth no depth map for this image");
  });

  it("tells a failure from an image without depth", async () => {
    const client = { imageObjectUrl: () => Promise.reject(new ApiError(500, "boom", null)) };
    let last: DepthView | null = null;
    render(<Probe client={client} id="iq_c" on={true} seen={(view) => (last = view)} />);
    await settle();
    expect(last).toEqual({ src: null, state: "error" });
  });
});

describe("the D key", () => {
  it("toggles the depth view for every kind of detector, and not while typing", () => {
    const depth = { kind: "view", action: "depth" };
    expect(commandForKey({ key: "d" }, { mode: "BINARY", class_names: null })).toEqual(depth);
    expect(commandForKey({ key: "D" }, { mode: "MULTI_CLASS", class_names: ["a", "b"] })).toEqual(depth);
    expect(commandForKey({ key: "d" }, { mode: "BOUNDING_BOX", class_names: ["crack"] })).toEqual(depth);
    expect(commandForKey({ key: "d", targetTag: "INPUT" }, { mode: "BINARY", class_names: null })).toBeNull();
    expect(commandForKey({ key: "d", repeat: true }, { mode: "BINARY", class_names: null })).toBeNull();
  });
});
