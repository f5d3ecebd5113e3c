/**
 * Compile-time check that the cloud's generated OpenAPI types (schema.d.ts, from
 * `npm run gen:api`) still fit the wire types the UI is written against (types.ts).
 * When the cloud renames or retypes a field the UI reads, `tsc` fails here, in the build.
 * The UI's types stay a little looser (optional fields, `string` for open enums) so
 * that a newer cloud adding fields or values does not break an older UI.
 */
import type { components } from "./schema";
import type * as T from "./types";

type S = components["schemas"];
/** Resolves to `true` only when A can be used where B is expected. */
type Fits<A, B> = [A] extends [B] ? true : false;

export const schemaFits: Record<string, true> = {
  me: true satisfies Fits<S["MeOut"], T.Me>,
  detector: true satisfies Fits<S["Detector"], Omit<T.Detector, "metadata" | "mode_configuration" | "status" | "escalation_type">>,
  imageQuery: true satisfies Fits<S["ImageQuery"], Omit<T.ImageQuery, "result" | "metadata">>,
  reviewItem: true satisfies Fits<S["ReviewItem"], T.ReviewItem>,
  reviewQueue: true satisfies Fits<S["ReviewQueue"], T.ReviewQueue>,
  reviewStats: true satisfies Fits<S["ReviewStats"], T.ReviewStats>,
  detectorStats: true satisfies Fits<S["DetectorStats"], T.DetectorStats>,
  edgeLearning: true satisfies Fits<S["EdgeLearning"], T.EdgeLearning>,
  modelVersion: true satisfies Fits<S["ModelVersion"], Omit<T.ModelVersion, "metrics">>,
  trainingJob: true satisfies Fits<S["TrainingJob"], T.TrainingJob>,
  edge: true satisfies Fits<S["EdgeOut"], Omit<T.EdgeDetail, "detectors" | "counters">>,
  token: true satisfies Fits<S["TokenInfo"], T.ApiToken>,
  created: true satisfies Fits<S["TokenCreated"], T.ApiToken>,
  // Request bodies: what the UI sends must be accepted (the generator marks fields with
  // defaults as required, so the check is on the fields' types, not on their presence).
  detectorCreate: true satisfies Fits<T.DetectorCreate, Partial<S["DetectorCreate"]>>,
  detectorPatch: true satisfies Fits<T.DetectorPatch, Partial<S["DetectorPatch"]>>,
};
