// Browser scenario of the review page's heat-map overlay (imported by browser.mjs):
//   overlay  on a detector whose active model is an anomaly model: the heat map the cloud's
//            overlay route draws lies exactly over each item's image, follows zoom and pan,
//            `O` hides and shows it; `A` accepts the model's answer and the filter's count
//            for the detector drops without a reload; the next item shows its own map; then
//            the same at 390 x 844. Reports the SHA-256 of each map the page showed, so the test can
//            compare it with what the route answers through the API.

/** The overlay on screen: which item, its bytes' hash, and where it lies against the image. */
async function overlayOnScreen(page) {
  await page.waitForFunction(() => {
    const overlay = document.querySelector(".review-main[data-item-id] .viewer-overlay");
    const image = document.querySelector(".review-main[data-item-id] [data-testid=viewer] img:not(.viewer-overlay)");
    return overlay?.complete && overlay.naturalWidth > 0 && image?.complete && image.naturalWidth > 0;
  });
  return page.evaluate(async () => {
    const main = document.querySelector(".review-main[data-item-id]");
    const overlay = main.querySelector(".viewer-overlay");
    const image = main.querySelector("[data-testid=viewer] img:not(.viewer-overlay)");
    const bytes = await (await fetch(overlay.src)).arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const rect = (el) => {
      const r = el.getBoundingClientRect();
      return { x: r.x, y: r.y, w: r.width, h: r.height };
    };
    return {
      iq: main.dataset.imageQueryId,
      sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
      overlay: { ...rect(overlay), naturalW: overlay.naturalWidth, naturalH: overlay.naturalHeight },
      image: { ...rect(image), naturalW: image.naturalWidth, naturalH: image.naturalHeight },
      zoom: Number(main.querySelector("[data-testid=viewer]").dataset.zoom),
      hint: main.querySelector(".viewer-hint")?.textContent ?? "",
    };
  });
}

export async function overlay(h) {
  const { page, config, result } = h;
  const responses = [];
  page.on("response", (response) => {
    if (response.url().includes("/overlay")) responses.push({ url: response.url().replace(config.baseUrl, ""), status: response.status() });
  });
  result.overlayResponses = responses;
  await h.signIn(config.reviewerToken);
  await h.go("/review");
  await page.selectOption("select[aria-label='Detector filter']", config.detectorId);
  let item = await h.nextItem("");
  const shown = {};
  shown.first = await overlayOnScreen(page);
  await page.waitForFunction(() => document.querySelector("[data-testid=progress]")?.textContent === "Item 1 of 3");
  result.overlayPanel = await page.textContent("[data-testid=prediction]");

  // Zoomed and panned, the map stays on the image: both are in the same stage.
  const frame = await page.$eval("[data-testid=viewer]", (el) => {
    const r = el.getBoundingClientRect();
    return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
  });
  await page.mouse.move(frame.x, frame.y);
  await page.mouse.wheel(0, -500);
  await page.waitForFunction(() => Number(document.querySelector("[data-testid=viewer]")?.dataset.zoom) > 1.5);
  await page.mouse.down();
  await page.mouse.move(frame.x - 60, frame.y + 30, { steps: 4 });
  await page.mouse.up();
  shown.zoomed = await overlayOnScreen(page);
  await h.shot("23-review-overlay-zoomed");

  // O hides the map (the boxes too) and shows it again.
  await page.keyboard.press("o");
  await page.waitForSelector(".review-main[data-item-id] .viewer-overlay", { state: "detached" });
  result.overlayOffHint = await page.textContent(".viewer-hint");
  await page.keyboard.press("o");
  shown.again = await overlayOnScreen(page);
  await page.keyboard.press("r");
  await page.waitForFunction(() => Number(document.querySelector("[data-testid=viewer]")?.dataset.zoom) === 1);
  await h.shot("23-review-overlay");

  // A accepts the model's answer; the next item shows its own map, not the last one's.
  const option = `select[aria-label='Detector filter'] option[value='${config.detectorId}']`;
  result.filterBefore = await page.textContent(option);
  await page.keyboard.press("a");
  result.accepted = shown.again.iq;
  item = await h.nextItem(item.id);
  shown.next = await overlayOnScreen(page);
  // The filter's per-detector count follows the label (polled), no reload.
  await page.waitForFunction(([selector, before]) => document.querySelector(selector)?.textContent !== before, [option, result.filterBefore], { timeout: 10000 });
  result.filterAfter = await page.textContent(option);
  result.progressAfter = await page.textContent("[data-testid=progress]");

  // At phone size the map still covers the image exactly.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForFunction(() => {
    const image = document.querySelector(".review-main[data-item-id] [data-testid=viewer] img:not(.viewer-overlay)");
    return image && image.getBoundingClientRect().width < 390;
  });
  shown.phone = await overlayOnScreen(page);
  await h.shot("phone-review-overlay");
  await page.setViewportSize({ width: 1280, height: 900 });
  result.overlays = shown;
}
