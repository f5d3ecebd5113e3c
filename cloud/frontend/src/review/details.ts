/**
 * What the review page shows beside an item beyond the claim itself: the image query as
 * the cloud has it now (its answer, threshold and boxes), the detector's active model
 * version (polled, so "no model yet" turns into "v1 is active"), and the explanation and
 * heat map where this cloud serves those routes.
 */
import { useEffect, useState } from "react";
import type { Client } from "../api/client";
import { cloudRoutes, hasRoute } from "../api/capabilities";
import type { ImageQuery, ReviewItem } from "../api/types";

export interface ItemDetails {
  iq: ImageQuery | null;
  explanation: Record<string, unknown> | null;
  activeVersion: number | null | undefined;
  /** The cloud serves GET /v1/image-queries/{id}/overlay. */
  overlayRoute: boolean;
}

const EMPTY: ItemDetails = { iq: null, explanation: null, activeVersion: undefined, overlayRoute: false };

export function useItemDetails(client: Client, item: ReviewItem | null, pollMs = 10_000): ItemDetails {
  const [details, setDetails] = useState<ItemDetails>(EMPTY);
  const iqId = item?.image_query_id;
  const detectorId = item?.detector_id;
  // Only a query some model answered has an explanation; asking for the others would only
  // collect 404s (which the browser logs as errors).
  const explained = Boolean(item?.edge_answer?.label);

  useEffect(() => {
    setDetails((old) => ({ ...EMPTY, activeVersion: old.activeVersion, overlayRoute: old.overlayRoute }));
    if (!iqId) return;
    let live = true;
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
    return () => {
      live = false;
    };
  }, [client, iqId, explained]);

  useEffect(() => {
    if (!detectorId) return;
    let live = true;
    const load = () =>
      client.detectorStats(detectorId).then(
        (stats) => live && setDetails((old) => ({ ...old, activeVersion: stats.active_model_version })),
        () => undefined,
      );
    void load();
    const timer = setInterval(load, pollMs);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, [client, detectorId, pollMs]);

  return details;
}
