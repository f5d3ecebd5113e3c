// Browser scenario of the review page's depth view (imported by browser.mjs):
//   depth  two items of one detector, the first sent with a depth map, the second without:
//          `D` shows the first one's false-colour depth view in place of the image, at the
//          image's place and size, and the hint says so; the view stays on for the next
//          item, which has none and says "no depth map for this image"; `D` again turns it
//          off and the image is back. Reports the SHA-256 of the view the page showed, so
//          the test can compare it with what GET /v1/image-queries/{id}/depth?view=colour answers.

/** The picture in the viewer: which item, what it shows, its bytes' hash and where it lies. */
async function onScreen(page) {
  return page.evaluate(async () => {
    const main = document.querySelector(".review-main[data-item-id]");
    const image = main.querySelector("[data-testid=viewer] img:not(.viewer-overlay)");
    const bytes = await (await fetch(image.src)).arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const r = image.getBoundingClientRect();
    return {
      iq: main.dataset.imageQueryId,
      alt: image.alt,
      sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
      rect: { x: r.x, y: r.y, w: r.width, h: r.height },
      natural: { w: image.naturalWidth, h: image.naturalHeight },
      hint: main.querySelector("[data-testid=depth-hint]")?.textContent ?? "",
    };
  });
}

async function waitFor(page, state, altStart) {
  await page.waitForFunction(
    ([wanted, alt]) => {
      const main = document.querySelector(".review-main[data-item-id]");
      const image = main?.querySelector("[data-testid=viewer] img:not(.viewer-overlay)");
      const hint = main?.querySelector("[data-testid=depth-hint]");
      return hint?.dataset.state === wanted && image?.alt.startsWith(alt) && image.complete && image.naturalWidth > 0;
    },
    [state, altStart],
  );
}

export async function depth(h) {
  const { page, config, result } = h;
  const depthResponses = [];
  page.on("response", (response) => {
    if (response.url().includes("/depth")) depthResponses.push({ url: response.url().replace(config.baseUrl, ""), status: response.status() });
  });
  result.depthResponses = depthResponses;
  await h.signIn(config.reviewerToken);
  await h.go("/review");
  await page.selectOption("select[aria-label='Detector filter']", config.detectorId);
  await h.nextItem("");
  await waitFor(page, "off", "Image");
  const shown = { image: await onScreen(page) };
  result.requestsBeforeD = depthResponses.length; // nothing is fetched until D

  await page.keyboard.press("d");
  await waitFor(page, "shown", "Depth map");
  shown.depth = await onScreen(page);
  await h.shot("24-review-depth");

  // The view stays on: the next item (sent without depth) says it has none, its image stays.
  await page.keyboard.press("y");
  await page.waitForFunction((first) => document.querySelector(".review-main[data-item-id]")?.dataset.imageQueryId !== first, shown.image.iq);
  await waitFor(page, "none", "Image");
  shown.none = await onScreen(page);
  h.expectConsole(); // the 404 of the query without depth is how the page learns it has none

  await page.keyboard.press("d");
  await waitFor(page, "off", "Image");
  shown.off = await onScreen(page);
  result.depth = shown;
}
