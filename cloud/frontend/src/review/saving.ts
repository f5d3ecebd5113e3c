/**
 * Saving a label so that none is lost: what a failed write means, and the retries.
 *
 * A label is reported saved only when the cloud answered 2xx. A network error or a 5xx
 * (or 429) is worth retrying a few times; a 401 means the token is gone, so the label
 * waits until the reviewer signs in again; anything else (409: the claim expired or the
 * item was taken, 4xx) needs the reviewer, so the item comes back on screen.
 */
import { ApiError } from "../api/client";

export type FailureKind = "auth" | "transient" | "rejected";

export type SaveOutcome = { stored: true } | { stored: false; kind: FailureKind; message: string; status: number | null };

export function failureKind(error: unknown): FailureKind {
  if (error instanceof ApiError) {
    if (error.status === 401) return "auth";
    if (error.status === 0 || error.status === 429 || error.status >= 500) return "transient";
  }
  return "rejected";
}

export function failureMessage(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 0) return "the cloud could not be reached (offline?)";
    return `HTTP ${error.status}: ${error.detail}`;
  }
  return error instanceof Error ? error.message : String(error);
}

export type Sleep = (ms: number) => Promise<void>;

export const realSleep: Sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Send `write`, retrying transient failures after each of `delaysMs`; `onRetry` is told
 * before each retry (so the page can say "retrying"). Never throws.
 */
export async function saveWithRetry(
  write: () => Promise<unknown>,
  delaysMs: readonly number[],
  sleep: Sleep = realSleep,
  onRetry?: (attempt: number, message: string) => void,
): Promise<SaveOutcome> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      await write();
      return { stored: true };
    } catch (error) {
      const kind = failureKind(error);
      const message = failureMessage(error);
      if (kind !== "transient" || attempt >= delaysMs.length) {
        return { stored: false, kind, message, status: error instanceof ApiError ? error.status : null };
      }
      onRetry?.(attempt + 1, message);
      await sleep(delaysMs[attempt]);
    }
  }
}
