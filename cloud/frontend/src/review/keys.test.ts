import { describe, expect, it } from "vitest";
import { commandForKey, labelOptions } from "./keys";

const binary = { mode: "BINARY", class_names: null };
const multi = { mode: "MULTI_CLASS", class_names: ["red", "green", "blue"] };

describe("commandForKey", () => {
  it("maps Y/N/U to the binary answers, either case", () => {
    expect(commandForKey({ key: "y" }, binary)).toEqual({ kind: "label", label: "YES" });
    expect(commandForKey({ key: "N" }, binary)).toEqual({ kind: "label", label: "NO" });
    expect(commandForKey({ key: "u" }, binary)).toEqual({ kind: "label", label: "UNCLEAR" });
  });

  it("maps digit keys to the class in that position for multi-class detectors", () => {
    expect(commandForKey({ key: "1" }, multi)).toEqual({ kind: "label", label: "red" });
    expect(commandForKey({ key: "3" }, multi)).toEqual({ kind: "label", label: "blue" });
    expect(commandForKey({ key: "4" }, multi)).toBeNull();
    expect(commandForKey({ key: "y" }, multi)).toBeNull();
  });

  it("gives digit keys no meaning on binary detectors", () => {
    expect(commandForKey({ key: "1" }, binary)).toBeNull();
  });

  it("maps S to skip and Z to undo; undo works with nothing on screen", () => {
    expect(commandForKey({ key: "s" }, binary)).toEqual({ kind: "skip" });
    expect(commandForKey({ key: "Z" }, binary)).toEqual({ kind: "undo" });
    expect(commandForKey({ key: "z" }, null)).toEqual({ kind: "undo" });
    expect(commandForKey({ key: "s" }, null)).toBeNull();
    expect(commandForKey({ key: "y" }, null)).toBeNull();
  });

  it("ignores auto-repeat, modifier chords and typing in form fields", () => {
    expect(commandForKey({ key: "y", repeat: true }, binary)).toBeNull();
    expect(commandForKey({ key: "z", ctrlKey: true }, binary)).toBeNull();
    expect(commandForKey({ key: "n", metaKey: true }, binary)).toBeNull();
    expect(commandForKey({ key: "n", altKey: true }, binary)).toBeNull();
    expect(commandForKey({ key: "y", targetTag: "input" }, binary)).toBeNull();
    expect(commandForKey({ key: "y", targetTag: "SELECT" }, binary)).toBeNull();
    expect(commandForKey({ key: "y", targetEditable: true }, binary)).toBeNull();
    expect(commandForKey({ key: "y", targetTag: "BUTTON" }, binary)).toEqual({ kind: "label", label: "YES" });
  });

  it("ignores named keys", () => {
    expect(commandForKey({ key: "Enter" }, binary)).toBeNull();
    expect(commandForKey({ key: "Shift" }, binary)).toBeNull();
  });
});

describe("labelOptions", () => {
  it("lists the binary answers with their keys", () => {
    expect(labelOptions(binary).map((o) => `${o.key}:${o.label}`)).toEqual(["Y:YES", "N:NO", "U:UNCLEAR"]);
  });

  it("numbers classes from 1 and gives the tenth the 0 key", () => {
    const ten = { mode: "MULTI_CLASS", class_names: Array.from({ length: 12 }, (_, i) => `c${i + 1}`) };
    const options = labelOptions(ten);
    expect(options).toHaveLength(10);
    expect(options[0]).toMatchObject({ key: "1", label: "c1" });
    expect(options[9]).toMatchObject({ key: "0", label: "c10" });
    expect(commandForKey({ key: "0" }, ten)).toEqual({ kind: "label", label: "c10" });
  });

  it("falls back to binary answers when a multi-class item has no class names", () => {
    expect(labelOptions({ mode: "MULTI_CLASS", class_names: [] })[0].label).toBe("YES");
  });
});

describe("accept and view keys", () => {
  const answered = { mode: "BINARY", class_names: null, edge_answer: { label: "NO" } };
  it("A accepts the model's answer when it is one of the answers", () => {
    expect(commandForKey({ key: "a" }, answered)).toEqual({ kind: "label", label: "NO" });
    expect(commandForKey({ key: "a" }, { ...answered, edge_answer: null })).toBeNull();
    expect(commandForKey({ key: "a" }, { ...answered, edge_answer: { label: "MAYBE" } })).toBeNull();
    expect(commandForKey({ key: "a", repeat: true }, answered)).toBeNull();
  });

  it("R, M, O, + and - drive the viewer", () => {
    expect(commandForKey({ key: "r" }, answered)).toEqual({ kind: "view", action: "reset" });
    expect(commandForKey({ key: "M" }, answered)).toEqual({ kind: "view", action: "smooth" });
    expect(commandForKey({ key: "o" }, answered)).toEqual({ kind: "view", action: "overlay" });
    expect(commandForKey({ key: "+" }, answered)).toEqual({ kind: "view", action: "zoomIn" });
    expect(commandForKey({ key: "-" }, answered)).toEqual({ kind: "view", action: "zoomOut" });
  });
});
