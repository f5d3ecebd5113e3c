/**
 * Wire types of the cloud API the UI uses.
 *
 * Written by hand from the cloud API's contract so the UI could be built before the API
 * ran; `npm run gen:api` writes the generated `schema.d.ts`, and the names below are
 * checked against it in `schema-check.ts` so a drift fails the type check.
 */

export type Role = "admin" | "reviewer" | "device" | "worker";

export interface Me {
  email: string;
  username: string;
  group: { id: number | string; name: string } | null;
  is_superuser: boolean;
  role: Role;
  account_id: number | string | null;
}

export interface Page<T> {
  count: number;
  next: string | null;
  previous: string | null;
  results: T[];
}

export type DetectorMode = "BINARY" | "MULTI_CLASS" | string;

export interface Detector {
  id: string;
  type?: string;
  created_at: string;
  name: string;
  query: string;
  group_name?: string;
  confidence_threshold: number;
  patience_time?: number;
  metadata?: Record<string, unknown> | null;
  mode: DetectorMode;
  mode_configuration?: { class_names?: string[] } | null;
  status?: "ON" | "OFF" | null;
  escalation_type?: string | null;
}

export interface DetectorCreate {
  name: string;
  query: string;
  confidence_threshold: number;
  mode: "BINARY" | "MULTI_CLASS";
  mode_configuration?: { class_names: string[] };
}

export interface DetectorPatch {
  confidence_threshold?: number;
  status?: "ON" | "OFF";
  name?: string;
}

export interface QueryResult {
  label: string;
  confidence: number | null;
  source?: string | null;
  from_edge?: boolean | null;
}

/** A box in image fractions [0, 1] (Groundlight's ROI). */
export interface Roi {
  label: string;
  score: number;
  geometry: { left: number; top: number; right: number; bottom: number };
}

/** A box sent with a label (the cloud fills in the centre). */
export interface RoiRequest {
  label: string;
  score: number;
  geometry: { left: number; top: number; right: number; bottom: number };
}

/** COUNT: class_name, max_count; BOUNDING_BOX: class_name, max_num_bboxes; MULTI_CLASS: class_names. */
export interface ModeConfiguration {
  class_names?: string[];
  class_name?: string;
  max_count?: number;
  max_num_bboxes?: number;
}

export interface ImageQuery {
  id: string;
  created_at: string;
  query: string;
  detector_id: string;
  result_type?: string;
  result: QueryResult | null;
  /** The detector's threshold when the query was asked. */
  confidence_threshold?: number;
  rois?: Roi[] | null;
  metadata?: Record<string, unknown> | null;
  done_processing?: boolean;
}

export interface ApiToken {
  id: string;
  name: string;
  role: Role;
  snippet?: string;
  /** The raw token, only in the answer to its creation. */
  token?: string;
  created_at?: string;
  last_used_at?: string | null;
}

/** What the edge (or cloud model) answered before the query was escalated. */
export interface EdgeAnswer {
  label: string | null;
  confidence: number | null;
  from_edge?: boolean | null;
  source?: string | null;
  /** The primary model version that answered (the edge's or the cloud's). */
  model_version?: number | null;
  /** Its score per class (none for boxes and counts). */
  probabilities?: Record<string, number> | null;
  in_domain_score?: number | null;
}

export type EscalationReason = "low_confidence" | "out_of_domain" | "audit" | "human_review_always" | "no_model" | string;

export interface ReviewItem {
  id: string;
  image_query_id: string;
  detector_id: string;
  detector_name: string;
  query: string;
  mode: DetectorMode;
  class_names: string[] | null;
  mode_configuration?: ModeConfiguration | null;
  reason: EscalationReason;
  edge_answer: EdgeAnswer | null;
  /** The query's result now and its boxes (the model's: the box editor's starting point). */
  result?: Record<string, unknown> | null;
  rois?: Roi[] | null;
  image_url: string;
  created_at: string;
  status: string;
  claimed_by: string | null;
  claim_expires_at: string | null;
  label: string | null;
}

export interface ReviewQueue {
  count: number;
  oldest_age_s: number | null;
  items: ReviewItem[];
}

export interface ReviewStats {
  total_pending: number;
  oldest_age_s: number | null;
  per_detector: { detector_id: string; detector_name: string; pending: number; oldest_age_s: number | null }[];
}

export interface DetectorStats {
  labels_per_class: Record<string, number>;
  by_source: Record<string, number>;
  over_time: { date: string; counts: Record<string, number> }[];
  total_labels: number;
  pending_reviews: number;
  active_model_version: number | null;
}

/** One hour or day of GET /v1/detectors/{id}/stats/edge-learning. */
export interface EdgeLearningBucket {
  start: string;
  /** Training-set labels by the end of the bucket (cumulative). */
  labels: number;
  queries: number;
  edge_answers: number;
  /** edge_answers / queries from the edges' hourly counters; null without queries. */
  edge_answer_rate: number | null;
  /** Queries with both the edge's own answer and a human label. */
  compared: number;
  agreed: number;
  edge_accuracy: number | null;
}

export interface EdgeLearning {
  detector_id: string;
  bucket: "hour" | "day";
  buckets: EdgeLearningBucket[];
}

export interface ModelMetrics {
  accuracy?: number | null;
  balanced_accuracy?: number | null;
  confident_coverage?: number | null;
  confident_accuracy?: number | null;
  /** The worker also writes nested fields: per_class_recall, support, evaluation, comparison, promotion, ... */
  [name: string]: unknown;
}

export interface ModelVersion {
  id: string;
  detector_id: string;
  version: number;
  status: "candidate" | "active" | "retired" | string;
  trainer: string;
  created_at: string;
  metrics: ModelMetrics;
  training_set_size: number | null;
  class_counts: Record<string, number> | null;
  decision: { action: string; reason: string; at: string } | null;
  /** The package's pipeline config; `model_kind` says classifier (left out), anomaly or detection. */
  primary_pipeline_config?: Record<string, unknown> | null;
}

export interface ModelCompare {
  a: ModelVersion;
  b: ModelVersion;
  metric_deltas: Record<string, number | null>;
}

export type TrainerKind = "auto" | "fast" | "finetune" | "anomaly";
export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

export interface EpochRecord {
  epoch: number;
  loss?: number | null;
  accuracy?: number | null;
  val_accuracy?: number | null;
}

export interface TrainingJob {
  id: string;
  detector_id: string;
  status: JobStatus | string;
  trigger: string | null;
  trainer: string;
  progress: number;
  eta_s: number | null;
  message: string | null;
  epochs: EpochRecord[];
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  error: string | null;
  model_version: number | null;
}

export interface EdgeDetector {
  detector_id: string;
  primary_version?: number | null;
  oodd_version?: number | null;
}

export interface Edge {
  id: string;
  name: string;
  last_seen: string | null;
  software_version: string | null;
  detector_ids?: string[];
  detectors: EdgeDetector[];
  /** Rates and totals the edge reported in its last heartbeat (query_rate, escalation_rate, ...). */
  counters?: Record<string, number> | null;
  query_rate?: number | null;
  escalation_rate?: number | null;
  created_at?: string;
}

/** One hour of one detector's counters on an edge (queries, edge_answers, escalations, audits, ...). */
export interface EdgeHour {
  hour: string;
  detector_id: string;
  counters: Record<string, number>;
}

export interface EdgeDetail extends Edge {
  hourly?: EdgeHour[];
}

/** The cloud's JSON error body (common ErrorBody). */
export interface ErrorBody {
  detail: unknown;
  code?: string;
}
