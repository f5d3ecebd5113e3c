/**
 * Which optional routes this cloud serves, read once from its OpenAPI document, so the UI
 * asks for an explanation or an overlay only where the route exists (a request that is
 * bound to 404 would still be logged by the browser as an error).
 */
let routes: Promise<Set<string>> | null = null;

export function cloudRoutes(): Promise<Set<string>> {
  routes ??= fetch("/openapi.json", { headers: { accept: "application/json" } })
    .then((response) => (response.ok ? response.json() : { paths: {} }))
    .then((doc: { paths?: Record<string, unknown> }) => new Set(Object.keys(doc.paths ?? {})))
    .catch(() => new Set<string>());
  return routes;
}

/** True when a route like `/v1/image-queries/{id}/explanation` is served, whatever its parameter is called. */
export function hasRoute(served: Set<string>, prefix: string, suffix: string): boolean {
  for (const path of served) {
    if (path.startsWith(prefix) && path.endsWith(suffix) && /^\{[^/}]+\}$/.test(path.slice(prefix.length, path.length - suffix.length))) {
      return true;
    }
  }
  return false;
}

/** For tests: forget the cached document. */
export function resetCloudRoutes(): void {
  routes = null;
}
