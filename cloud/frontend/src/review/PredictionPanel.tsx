/**
 * What the model said about the item on screen, told truthfully: who answered (edge model,
 * cloud model, person, or nobody yet), with what confidence against which threshold, which
 * model version, the per-class scores and why the query was escalated.
 */
import type { ReviewItem } from "../api/types";
import { JsonValue, formatScalar, humanKey } from "../components/JsonValue";
import { Badge, REASONS, pct } from "../components/ui";
import { ORIGIN_TITLE, againstThreshold, answerOrigin } from "./answer";
import type { ItemDetails } from "./details";

/** Explanation fields shown in their own rows; the rest are listed under "More". */
const VERSION_KEYS = ["model_version", "version", "primary_version"];
const SCORE_KEYS = ["class_scores", "per_class_scores", "probabilities", "scores"];
const WHY_KEYS = ["escalation_reason", "why", "reason"];

function first(source: Record<string, unknown> | null, keys: string[]): [string, unknown] | null {
  if (!source) return null;
  for (const key of keys) if (source[key] !== undefined && source[key] !== null) return [key, source[key]];
  return null;
}

export function PredictionPanel({ item, details }: { item: ReviewItem; details: ItemDetails }) {
  const answer = item.edge_answer;
  const origin = answerOrigin(answer);
  const { iq, explanation, activeVersion } = details;
  const threshold = (explanation?.threshold as number | undefined) ?? iq?.confidence_threshold;
  // The item itself carries the answering model's version and scores; an explanation may add them.
  const reported = (answer?.model_version ?? null) !== null ? (["model_version", answer?.model_version] as [string, unknown]) : null;
  const version = reported ?? first(explanation, VERSION_KEYS);
  const own = answer?.probabilities && Object.keys(answer.probabilities).length > 0 ? (["probabilities", answer.probabilities] as [string, unknown]) : null;
  const scores =
    own ?? first(explanation, SCORE_KEYS) ?? first((iq?.result ?? null) as Record<string, unknown> | null, SCORE_KEYS);
  const why = first(explanation, WHY_KEYS);
  const shownKeys = new Set([...VERSION_KEYS, ...SCORE_KEYS, ...WHY_KEYS, "threshold"]);
  const rest = explanation ? Object.entries(explanation).filter(([key]) => !shownKeys.has(key)) : [];
  const current = iq?.result ?? null;
  const currentOrigin = iq ? answerOrigin(current) : null;

  return (
    <dl className="prediction" data-testid="prediction">
      <dt>Model's answer</dt>
      <dd data-testid="model-answer">
        {origin === "waiting" ? (
          <span className="muted">none: no model answered this query</span>
        ) : (
          <>
            <Badge kind="answer">{answer?.label}</Badge> {pct(answer?.confidence)} confidence ·{" "}
            <span data-testid="answer-origin">{ORIGIN_TITLE[origin]}</span>
          </>
        )}
      </dd>
      {origin !== "waiting" && threshold !== undefined && (
        <>
          <dt>Confidence vs threshold</dt>
          <dd data-testid="threshold">
            <ConfidenceBar confidence={answer?.confidence ?? null} threshold={threshold} />
            <span className="small">{againstThreshold(answer?.confidence, threshold) ?? `threshold ${pct(threshold, 0)}`}</span>
          </dd>
        </>
      )}
      <dt>Model version</dt>
      <dd data-testid="model-version">
        {version ? `v${formatScalar(version[1])} answered` : origin === "waiting" ? "none answered" : "not reported"}
        {activeVersion !== undefined && (
          <span className="muted"> · {activeVersion === null ? "no model yet" : `v${activeVersion} active now`}</span>
        )}
      </dd>
      {scores && (
        <>
          <dt>Per-class scores</dt>
          <dd data-testid="class-scores">
            <ClassScores value={scores[1]} chosen={answer?.label ?? null} />
          </dd>
        </>
      )}
      {answer?.in_domain_score !== undefined && answer?.in_domain_score !== null && (
        <>
          <dt>Like its training images</dt>
          <dd data-testid="in-domain" className="small">
            {pct(answer.in_domain_score)} in-domain
            {answer.in_domain_score < 0.5 && <span className="muted"> · unlike what the model learned from</span>}
          </dd>
        </>
      )}
      <dt>Why it is here</dt>
      <dd data-testid="why">
        <Badge kind={item.reason}>{item.reason.replaceAll("_", " ")}</Badge>
        <span className="muted"> {REASONS[item.reason] ?? ""}</span>
        {item.reason === "no_model" && activeVersion !== null && activeVersion !== undefined && (
          <span className="small"> (there was no model when it was asked; v{activeVersion} is active now)</span>
        )}
        {why && String(why[1]) !== item.reason && <div className="small">{formatScalar(why[1])}</div>}
      </dd>
      {currentOrigin && currentOrigin !== "waiting" && currentOrigin !== origin && (
        <>
          <dt>Answer now</dt>
          <dd>
            <Badge kind="answer">{current?.label}</Badge> · {ORIGIN_TITLE[currentOrigin]}
          </dd>
        </>
      )}
      {rest.length > 0 && (
        <>
          <dt>Explanation</dt>
          <dd data-testid="explanation">
            <table className="json-table">
              <tbody>
                {rest.map(([key, value]) => (
                  <tr key={key}>
                    <th scope="row">{humanKey(key)}</th>
                    <td>
                      <JsonValue value={value} name={key} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </dd>
        </>
      )}
      <dt>Image query</dt>
      <dd className="mono">{item.image_query_id}</dd>
    </dl>
  );
}

/** Scores per class, highest first, as bars; anything else as the JSON viewer shows it. */
function ClassScores({ value, chosen }: { value: unknown; chosen: string | null }) {
  if (!value || typeof value !== "object" || Array.isArray(value)) return <JsonValue value={value} name="score" />;
  const entries = Object.entries(value as Record<string, unknown>).filter((entry): entry is [string, number] => typeof entry[1] === "number");
  if (entries.length === 0) return <JsonValue value={value} name="score" />;
  entries.sort((a, b) => b[1] - a[1]);
  return (
    <table className="class-scores">
      <tbody>
        {entries.map(([name, score]) => (
          <tr key={name} className={name === chosen ? "chosen" : undefined}>
            <th scope="row">{name}</th>
            <td>
              <span className="confbar" aria-hidden="true">
                <span className="confbar-fill" style={{ width: `${Math.max(0, Math.min(1, score)) * 100}%` }} />
              </span>
            </td>
            <td className="num">{pct(score)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function ConfidenceBar({ confidence, threshold }: { confidence: number | null; threshold: number }) {
  const value = Math.max(0, Math.min(1, confidence ?? 0));
  const below = confidence !== null && confidence < threshold;
  return (
    <span className="confbar" aria-hidden="true">
      <span className={`confbar-fill${below ? " below" : ""}`} style={{ width: `${value * 100}%` }} />
      <span className="confbar-mark" style={{ left: `${threshold * 100}%` }} />
    </span>
  );
}
