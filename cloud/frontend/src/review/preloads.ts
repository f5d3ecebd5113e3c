/**
 * Images of the items next in the queue, downloaded and decoded before anyone claims them,
 * so that a claim that hands out one of them costs one round trip, not two. Keyed by image
 * query id; an image no longer among the next items is freed.
 */
import type { ReviewItem } from "../api/types";
import type { ReviewBackend } from "./contract";

export class Preloads {
  private images = new Map<string, Promise<string | null>>();

  constructor(private readonly backend: Pick<ReviewBackend, "loadImage" | "releaseImage">) {}

  get size(): number {
    return this.images.size;
  }

  /** The item's image when it was preloaded (its URL then belongs to the caller), else undefined. */
  take(imageQueryId: string): Promise<string | null> | undefined {
    const image = this.images.get(imageQueryId);
    this.images.delete(imageQueryId);
    return image;
  }

  /** Keep (and start downloading) the images of `items`; free every other one. */
  keepOnly(items: ReviewItem[]): void {
    const keep = new Set(items.map((item) => item.image_query_id));
    for (const [id, url] of this.images) {
      if (keep.has(id)) continue;
      this.images.delete(id);
      void url.then((value) => value && this.backend.releaseImage(value));
    }
    for (const item of items) {
      if (!this.images.has(item.image_query_id)) {
        this.images.set(item.image_query_id, this.backend.loadImage(item).catch(() => null));
      }
    }
  }
}
