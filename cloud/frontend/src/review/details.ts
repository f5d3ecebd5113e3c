/**
 * What the review page shows beside an item beyond the claim itself: the image query as
 * the cloud has it now (its answer, threshold and boxes), the detector's active model
 * version and its kind (polled, so "no model yet" turns into "v1 is active", and a heat
 * map is asked for only while an anomaly model is active: the overlay route runs that
 * model again and refuses any other), and the explanation where this cloud serves it.
 */
import { useEffect, useState } from "react";
import type { Client } from "../api/client";
import { cloudRoutes, hasRoute } from "../api/capabilities";
import type { ImageQuery, ReviewItem } from "../api/types";

export interface ItemDetails {
  iq: ImageQuery | null;
  explanation: Record<string, unknown> | null;
  activeVersion: number | null | undefined;
  /** The active version's `model_kind` ("classifier", "anomaly", "detection"); null without one, undefined until known. */
  activeKind: string | null | undefined;
  /** The cloud serves GET /v1/image-queries/{id}/overlay. */
  overlayRoute: boolean;
}

const EMPTY: ItemDetails = { iq: null, explanation: null, activeVersion: undefined, activeKind: undefined, overlayRoute: false };

/**
 * The details are asked for once an item has been on screen this long. A reviewer who
 * answers sooner is not reading the panel, and its requests would compete with the claims
 * and labels that keep the next items coming (a browser opens six connections to a host).
 */
export const DETAILS_AFTER_MS = 250;

/**
 * `item` is the item on screen (null while the next one is being claimed); `detectorId` is
 * the detector of the item last shown, so that the active-version poll is not restarted
 * (and refetched) each time the line runs empty for a moment between two items.
 */
export function useItemDetails(client: Client, item: ReviewItem | null, detectorId: string | undefined, pollMs = 10_000): ItemDetails {
  const [details, setDetails] = useState<ItemDetails>(EMPTY);
  const iqId = item?.image_query_id;
  // Only a query some model answered has an explanation; asking for the others would only
  // collect 404s (which the browser logs as errors).
  const explained = Boolean(item?.edge_answer?.label);

  useEffect(() => {
    setDetails((old) => ({ ...EMPTY, activeVersion: old.activeVersion, activeKind: old.activeKind, overlayRoute: old.overlayRoute }));
    if (!iqId) return;
    let live = true;
    const timer = setTimeout(() => {
      client.imageQuery(iqId).then(
        (iq) => live && setDetails((old) => ({ ...old, iq })),
        () => undefined,
      );
      void cloudRoutes().then((routes) => {
        if (!live) return;
        const overlayRoute = hasRoute(routes, "/v1/image-queries/", "/overlay");
        setDetails((old) => ({ ...old, overlayRoute }));
        if (!explained || !hasRoute(routes, "/v1/image-queries/", "/explanation")) return;
        client.explanation(iqId).then(
          (explanation) => live && setDetails((old) => ({ ...old, explanation })),
          () => undefined, // none for this query: the panel simply leaves it out
        );
      });
    }, DETAILS_AFTER_MS);
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [client, iqId, explained]);

  useEffect(() => {
    if (!detectorId) return;
    // Another detector: what was known of the last one's model says nothing of this one's.
    setDetails((old) => ({ ...old, activeVersion: undefined, activeKind: undefined }));
    let live = true;
    /** The version whose kind is known: the models list is fetched only when it changes. */
    let kindOf: number | null | undefined = undefined;
    const load = async () => {
      try {
        const version = (await client.detectorStats(detectorId)).active_model_version;
        if (!live) return;
        setDetails((old) => ({ ...old, activeVersion: version }));
        if (version === kindOf) return;
        let activeKind: string | null = null;
        if (version !== null) {
          const models = await client.models(detectorId);
          const config = models.find((model) => model.version === version)?.primary_pipeline_config;
          // A classifier package leaves model_kind out (the package format's default).
          activeKind = config ? String(config.model_kind ?? "classifier") : null;
        }
        kindOf = version;
        if (live) setDetails((old) => ({ ...old, activeKind }));
      } catch {
        // Kept as it was; asked again at the next poll.
      }
    };
    void load();
    const timer = setInterval(load, pollMs);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, [client, detectorId, pollMs]);

  return details;
}
