/**
 * Two versions side by side: every field of their metrics, nested ones too (per-class
 * recall and support as per-class rows, the evaluation, comparison and promotion objects as
 * readable tables), with the change from the older to the newer.
 */
import type { ModelCompare as Comparison, ModelVersion } from "../api/types";
import { useSession } from "../auth";
import { JsonValue, formatScalar, humanKey } from "../components/JsonValue";
import { Gate, useLoad } from "../components/ui";
import { decisionText, nearChance } from "./modelFacts";

function isNumberMap(value: unknown): value is Record<string, number | null> {
  return (
    value !== null &&
    typeof value === "object" &&
    !Array.isArray(value) &&
    Object.values(value).every((v) => v === null || typeof v === "number")
  );
}

function deltaCell(name: string, a: unknown, b: unknown, given?: number | null) {
  const delta = typeof given === "number" ? given : typeof a === "number" && typeof b === "number" ? b - a : null;
  if (delta === null) return <td />;
  const rate = /accuracy|coverage|rate|precision|recall|f1|auroc/.test(name);
  const text = rate ? `${(delta * 100).toFixed(1)} pt` : formatScalar(delta, "");
  return <td className={delta > 0 ? "up" : delta < 0 ? "down" : ""}>{`${delta > 0 ? "+" : ""}${text}`}</td>;
}

function Rows({ name, a, b, delta }: { name: string; a: unknown; b: unknown; delta?: number | null }) {
  if ((isNumberMap(a) || a == null) && (isNumberMap(b) || b == null) && (a != null || b != null)) {
    const keys = Array.from(new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})])).sort();
    const metric = name === "support" ? "" : name;
    return (
      <>
        <tr className="group">
          <td colSpan={4}>{humanKey(name)}</td>
        </tr>
        {keys.map((key) => {
          const va = (a as Record<string, number> | null)?.[key];
          const vb = (b as Record<string, number> | null)?.[key];
          return (
            <tr key={key}>
              <td className="sub">{key}</td>
              <td>{formatScalar(va, metric)}</td>
              <td>{formatScalar(vb, metric)}</td>
              {deltaCell(metric, va, vb)}
            </tr>
          );
        })}
      </>
    );
  }
  const scalar = (v: unknown) => v === null || v === undefined || typeof v !== "object";
  return (
    <tr>
      <td>{humanKey(name)}</td>
      <td>{scalar(a) ? formatScalar(a, name) : <JsonValue value={a} name={name} />}</td>
      <td>{scalar(b) ? formatScalar(b, name) : <JsonValue value={b} name={name} />}</td>
      {scalar(a) && scalar(b) ? deltaCell(name, a, b, delta) : <td />}
    </tr>
  );
}

export function CompareTable({ comparison }: { comparison: Comparison }) {
  const { a, b, metric_deltas: deltas } = comparison;
  const names = Array.from(new Set([...Object.keys(a.metrics), ...Object.keys(b.metrics)])).sort();
  const flag = (m: ModelVersion) => nearChance(m);
  return (
    <div className="table-wrap">
      <table className="table compare" data-testid="compare-table">
        <thead>
          <tr>
            <th>Field</th>
            <th>v{a.version}</th>
            <th>v{b.version}</th>
            <th>Change</th>
          </tr>
        </thead>
        <tbody>
          <Rows name="status" a={a.status} b={b.status} />
          <Rows name="trainer" a={a.trainer} b={b.trainer} />
          <Rows name="labels in the training set" a={a.training_set_size} b={b.training_set_size} />
          <Rows name="decision" a={decisionText(a.decision, a.status)} b={decisionText(b.decision, b.status)} />
          {(flag(a) || flag(b)) && <Rows name="warning" a={flag(a) ?? "–"} b={flag(b) ?? "–"} />}
          <Rows name="labels per class" a={a.class_counts} b={b.class_counts} />
          {names.map((name) => (
            <Rows key={name} name={name} a={a.metrics[name]} b={b.metrics[name]} delta={deltas[name]} />
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function Compare({ detectorId, a, b }: { detectorId: string; a: number; b: number }) {
  const { client } = useSession();
  const compare = useLoad<Comparison>(() => client.compareModels(detectorId, a, b), [client, detectorId, a, b]);
  return (
    <div className="card" aria-label="Comparison">
      <h3>
        v{a} and v{b} side by side
      </h3>
      <Gate state={compare} what="the comparison">
        {(c) => <CompareTable comparison={c} />}
      </Gate>
    </div>
  );
}
