/**
 * A small typed client for the cloud API.
 *
 * Every call sends the `x-api-token` header; errors become `ApiError` carrying the
 * cloud's `{detail, code}` body so pages can say what went wrong and what to do.
 * Images need the header too, so they are fetched as blobs and shown via object URLs.
 */
import type {
  ApiToken,
  Detector,
  DetectorCreate,
  DetectorPatch,
  DetectorStats,
  Edge,
  EdgeDetail,
  EdgeLearning,
  ImageQuery,
  Me,
  ModelCompare,
  ModelVersion,
  Page,
  ReviewItem,
  ReviewQueue,
  ReviewStats,
  RoiRequest,
  Role,
  TrainerKind,
  TrainingJob,
} from "./types";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly code: string | null,
  ) {
    super(detail);
    this.name = "ApiError";
  }

  /** What a person can do about it, in one sentence. */
  get hint(): string {
    if (this.status === 0) return "The cloud API did not answer: check that it is running and reload.";
    if (this.status === 401) return "Your token was refused: sign out and sign in with a valid token.";
    if (this.status === 403) return "Your token's role may not do this: ask an admin for a token with more rights.";
    if (this.status === 404) return "It no longer exists: go back to the list and reload.";
    if (this.status === 409) return "Someone else changed it first: reload and try again.";
    if (this.status >= 500) return "The cloud API failed: try again, and check its log if it keeps failing.";
    return "Check the values you entered and try again.";
  }
}

function detailText(detail: unknown): string {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((entry) => {
        if (entry && typeof entry === "object" && "msg" in entry) {
          const loc = "loc" in entry && Array.isArray(entry.loc) ? `${entry.loc.slice(1).join(".")}: ` : "";
          return `${loc}${String(entry.msg)}`;
        }
        return JSON.stringify(entry);
      })
      .join("; ");
  }
  return detail === undefined ? "" : JSON.stringify(detail);
}

type Query = Record<string, string | number | undefined | null>;

export class Client {
  constructor(
    private readonly token: string,
    private readonly baseUrl = "",
  ) {}

  url(path: string, query?: Query): string {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
    }
    const search = params.toString();
    return `${this.baseUrl}${path}${search ? `?${search}` : ""}`;
  }

  private async send(method: string, path: string, query?: Query, body?: unknown, keepalive = false): Promise<Response> {
    const headers: Record<string, string> = { "x-api-token": this.token, accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(this.url(path, query), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        keepalive,
      });
    } catch (error) {
      throw new ApiError(0, `Network error: ${(error as Error).message}`, "network");
    }
    if (!response.ok) {
      let detail = response.statusText || `HTTP ${response.status}`;
      let code: string | null = null;
      try {
        const parsed = (await response.json()) as { detail?: unknown; code?: string };
        detail = detailText(parsed.detail) || detail;
        code = parsed.code ?? null;
      } catch {
        // A body that is not JSON (a proxy's error page): keep the status text.
      }
      throw new ApiError(response.status, detail, code);
    }
    return response;
  }

  private async json<T>(method: string, path: string, query?: Query, body?: unknown): Promise<T> {
    const response = await this.send(method, path, query, body);
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    return (text ? JSON.parse(text) : undefined) as T;
  }

  me = () => this.json<Me>("GET", "/v1/me");

  // Detectors and image queries (Groundlight-compatible routes).
  detectors = (page = 1, pageSize = 100, name?: string) =>
    this.json<Page<Detector>>("GET", "/v1/detectors", { page, page_size: pageSize, name });
  detector = (id: string) => this.json<Detector>("GET", `/v1/detectors/${id}`);
  createDetector = (body: DetectorCreate) => this.json<Detector>("POST", "/v1/detectors", undefined, body);
  patchDetector = (id: string, body: DetectorPatch) => this.json<Detector>("PATCH", `/v1/detectors/${id}`, undefined, body);
  deleteDetector = (id: string) => this.json<void>("DELETE", `/v1/detectors/${id}`);
  detectorStats = (id: string) => this.json<DetectorStats>("GET", `/v1/detectors/${id}/stats`);
  edgeLearning = (id: string, days = 30) => this.json<EdgeLearning>("GET", `/v1/detectors/${id}/stats/edge-learning`, { days });
  imageQueries = (detectorId?: string, page = 1, pageSize = 20) =>
    this.json<Page<ImageQuery>>("GET", "/v1/image-queries", { page, page_size: pageSize, detector_id: detectorId });
  imageQuery = (id: string) => this.json<ImageQuery>("GET", `/v1/image-queries/${id}`);

  /** Image bytes as an object URL; the caller revokes it when the image leaves the screen. */
  async imageObjectUrl(path: string): Promise<string> {
    const response = await this.send("GET", path);
    const blob = await response.blob();
    return URL.createObjectURL(blob);
  }
  imageQueryImagePath = (id: string) => `/v1/image-queries/${id}/image`;
  /** Why the model answered as it did (model version, raw confidence, OODD score, ...); 404 where there is none. */
  explanation = (id: string) => this.json<Record<string, unknown>>("GET", `/v1/image-queries/${id}/explanation`);
  overlayPath = (id: string, kind: "heatmap" | "boxes") => `/v1/image-queries/${id}/overlay?kind=${kind}`;

  // Tokens.
  tokens = () => this.json<ApiToken[]>("GET", "/v1/tokens");
  createToken = (name: string, role: Role) => this.json<ApiToken>("POST", "/v1/tokens", undefined, { name, role });
  deleteToken = (id: string) => this.json<void>("DELETE", `/v1/tokens/${id}`);

  // Review queue.
  reviewQueue = (detectorId?: string, limit = 1) =>
    this.json<ReviewQueue>("GET", "/v1/review/queue", { detector_id: detectorId, limit });
  /**
   * The next item, claimed for the caller; null when the queue is empty (HTTP 204).
   * `ahead=1` asks for an item besides those already held (a cloud that lends one item at a
   * time ignores it and answers with the held item; the review session copes with both).
   */
  claim = async (detectorId?: string, ahead = false): Promise<ReviewItem | null> => {
    const response = await this.send("POST", "/v1/review/claim", { detector_id: detectorId, ahead: ahead ? 1 : undefined });
    if (response.status === 204) return null;
    const text = await response.text();
    return text ? (JSON.parse(text) as ReviewItem) : null;
  };
  label = (itemId: string, label: string, rois?: RoiRequest[]) =>
    this.json<ReviewItem>("POST", `/v1/review/items/${itemId}/label`, undefined, rois ? { label, rois } : { label });
  /** The SDK's `POST /v1/labels`: labels an image query whoever holds its review claim. */
  addLabel = (imageQueryId: string, label: string, rois?: RoiRequest[]) =>
    this.json<unknown>("POST", "/v1/labels", undefined, { image_query_id: imageQueryId, label, ...(rois ? { rois } : {}) });
  /** keepalive: a skip sent as the page closes (giving back claimed items) still arrives. */
  skip = async (itemId: string) => {
    await this.send("POST", `/v1/review/items/${itemId}/skip`, undefined, undefined, true);
  };
  /** keepalive as well: an unjudged give-back (filter change, page closing) keeps the item's place. */
  release = async (itemId: string) => {
    await this.send("POST", `/v1/review/items/${itemId}/release`, undefined, undefined, true);
  };
  undo = (itemId: string) => this.json<ReviewItem>("POST", `/v1/review/items/${itemId}/undo`);
  reviewStats = () => this.json<ReviewStats>("GET", "/v1/review/stats");

  // Models and training.
  models = (detectorId: string) => this.json<ModelVersion[]>("GET", `/v1/detectors/${detectorId}/models`);
  activateModel = (detectorId: string, version: number) =>
    this.json<unknown>("POST", `/v1/detectors/${detectorId}/models/${version}/activate`);
  rollbackModel = (detectorId: string) => this.json<unknown>("POST", `/v1/detectors/${detectorId}/models/rollback`);
  compareModels = (detectorId: string, a: number, b: number) =>
    this.json<ModelCompare>("GET", `/v1/detectors/${detectorId}/models/compare`, { a, b });
  startTraining = (detectorId: string, trainer: TrainerKind) =>
    this.json<TrainingJob>("POST", `/v1/detectors/${detectorId}/training-jobs`, undefined, { trainer });
  trainingJobs = (detectorId?: string) => this.json<TrainingJob[]>("GET", "/v1/training-jobs", { detector_id: detectorId });
  trainingJob = (id: string) => this.json<TrainingJob>("GET", `/v1/training-jobs/${id}`);
  cancelTrainingJob = (id: string) => this.json<TrainingJob>("POST", `/v1/training-jobs/${id}/cancel`);

  // Edges.
  edges = () => this.json<Edge[]>("GET", "/v1/edges");
  edge = (id: string) => this.json<EdgeDetail>("GET", `/v1/edges/${id}`);
}

/** Lists may come bare or wrapped in a page, depending on the route: accept both. */
export function asList<T>(value: T[] | Page<T> | { items: T[] } | null | undefined): T[] {
  if (!value) return [];
  if (Array.isArray(value)) return value;
  if ("results" in value) return value.results;
  if ("items" in value) return value.items;
  return [];
}
