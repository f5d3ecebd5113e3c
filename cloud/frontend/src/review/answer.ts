/**
 * Where an answer came from and what its confidence means, from the wire fields only
 * (`from_edge`, `source`), so the page never calls a cloud model's answer an edge answer
 * and never shows a query still waiting for a person as if it were labeled UNCLEAR.
 */

export type AnswerOrigin = "edge" | "cloud model" | "human" | "waiting";

const HUMAN_SOURCES = new Set(["USER", "CLOUD", "HUMAN", "CLOUD_LABELER", "HUMAN_AI_CLOUD_ENSEMBLE"]);

export interface AnswerLike {
  label?: string | null;
  source?: string | null;
  from_edge?: boolean | null;
}

export function answerOrigin(answer: AnswerLike | null | undefined): AnswerOrigin {
  if (!answer || !answer.label || answer.source === "STILL_PROCESSING") return "waiting";
  if (answer.from_edge || answer.source === "EDGE") return "edge";
  if (answer.source && HUMAN_SOURCES.has(answer.source.toUpperCase())) return "human";
  return "cloud model";
}

export const ORIGIN_TITLE: Record<AnswerOrigin, string> = {
  edge: "Edge model",
  "cloud model": "Cloud model",
  human: "Person",
  waiting: "Waiting for a person",
};

/** "52.3 % is below the 90 % threshold": the confidence against the detector's threshold. */
export function againstThreshold(confidence: number | null | undefined, threshold: number | null | undefined): string | null {
  if (confidence === null || confidence === undefined || threshold === null || threshold === undefined) return null;
  const side = confidence >= threshold ? "at or above" : "below";
  return `${side} the ${(threshold * 100).toFixed(0)} % threshold`;
}
