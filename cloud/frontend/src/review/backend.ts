/** The review session's backend on the real cloud API. */
import type { Client } from "../api/client";
import type { ReviewBackend } from "./session";

/** Download and decode an image so that showing it later costs no network and no decode. */
async function preload(url: string): Promise<void> {
  const image = new Image();
  image.src = url;
  try {
    await image.decode();
  } catch {
    // decode() rejects for formats the browser shows anyway (and in test DOMs); the bytes are local.
  }
}

/**
 * `client` is read on every call: after the reviewer signs in again the same session goes
 * on with the new token (and sends the labels that waited for it).
 */
export function cloudReviewBackend(client: () => Client): ReviewBackend {
  return {
    claim: (detectorId, ahead) => client().claim(detectorId, ahead),
    label: (itemId, label, rois) => client().label(itemId, label, rois),
    labelQuery: (imageQueryId, label, rois) => client().addLabel(imageQueryId, label, rois),
    skip: (itemId) => client().skip(itemId),
    release: (itemId) => client().release(itemId),
    undo: (itemId) => client().undo(itemId),
    async loadImage(item) {
      const api = client();
      const url = await api.imageObjectUrl(item.image_url || api.imageQueryImagePath(item.image_query_id));
      await preload(url);
      return url;
    },
    releaseImage: (url) => URL.revokeObjectURL(url),
    peek: (detectorId, limit) => client().reviewQueue(detectorId, limit),
  };
}
