/** What an admin needs to judge a model version, as plain functions (tested without a DOM). */
import type { ModelVersion } from "../api/types";

/** Chance level of a detector with these classes: 1 / number of classes (binary: 50 %). */
export function chanceLevel(model: Pick<ModelVersion, "class_counts">): number {
  const classes = Object.keys(model.class_counts ?? {}).length;
  return 1 / Math.max(2, classes);
}

/** The headline score: balanced accuracy where measured, else accuracy. */
export function headline(model: Pick<ModelVersion, "metrics">): { name: string; value: number } | null {
  for (const name of ["balanced_accuracy", "accuracy"]) {
    const value = model.metrics[name];
    if (typeof value === "number") return { name, value };
  }
  return null;
}

/** Within 10 points of chance: such a version guesses, whatever its other numbers say. */
export const NEAR_CHANCE_MARGIN = 0.1;

export function nearChance(model: Pick<ModelVersion, "metrics" | "class_counts">): string | null {
  const score = headline(model);
  if (!score) return null;
  const chance = chanceLevel(model);
  if (score.value >= chance + NEAR_CHANCE_MARGIN) return null;
  return `${score.name.replaceAll("_", " ")} ${(score.value * 100).toFixed(1)} % is near chance (${(chance * 100).toFixed(0)} %): this version is close to guessing`;
}

/** A worker's decision ("ACTIVATE" / "CANDIDATE" / "rollback" ...) in words. */
export function decisionText(decision: ModelVersion["decision"], status: string): string {
  if (!decision) return status === "active" ? "active" : "no decision recorded";
  const action = decision.action.toUpperCase();
  const verb =
    action === "ACTIVATE" || action === "ACTIVATED"
      ? "activated"
      : action === "CANDIDATE"
        ? "kept as a candidate (not activated)"
        : action === "ROLLBACK"
          ? "rolled back"
          : decision.action.toLowerCase();
  return decision.reason ? `${verb}: ${decision.reason}` : verb;
}

/** "started by manual" read badly: the job's trigger in words. */
export function triggerText(trigger: string | null): string | null {
  if (!trigger) return null;
  const words: Record<string, string> = {
    manual: "started by hand",
    labels: "started automatically as labels arrived",
    auto: "started automatically",
    schedule: "started on schedule",
  };
  return words[trigger] ?? `started by ${trigger.replaceAll("_", " ")}`;
}

/**
 * Seconds left, smoothed: the rate is the job's whole progress over its whole run (so one
 * quick epoch does not promise "1 s left"), and no estimate before 5 % or 3 s of progress.
 */
export function smoothedEta(progress: number, startedAt: string | null, now: number, reported: number | null): number | null {
  if (!startedAt || progress <= 0) return reported;
  const elapsed = (now - Date.parse(startedAt)) / 1000;
  if (!Number.isFinite(elapsed) || elapsed < 3 || progress < 0.05) return null;
  const fromRate = (elapsed * (1 - progress)) / progress;
  // The worker's own estimate, where given, is averaged in: it knows the epochs still to come.
  return reported === null ? fromRate : (fromRate + reported) / 2;
}
