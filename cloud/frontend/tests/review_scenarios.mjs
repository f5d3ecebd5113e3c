// Browser scenarios of the review page beyond the main journey (imported by browser.mjs):
//   failsave  no label is reported saved unless the cloud stored it: a token revoked mid-session
//             (sign in again, the waiting label is sent after), a server error on the label
//             write, and the browser offline; each checked through the API.
//   viewer    the image fills the frame, zoom / pan are kept from item to item, R resets.
//   phone     every page at 390 x 844 without horizontal panning; review answer buttons on screen.

/** The item on screen and the status line, as the reviewer sees them. */
async function onScreen(page) {
  return page.evaluate(() => ({
    iq: document.querySelector(".review-main[data-item-id]")?.getAttribute("data-image-query-id") ?? null,
    status: document.querySelector("[data-testid=last-action]")?.textContent ?? "",
    failure: document.querySelector("[data-testid=item-failure]")?.textContent ?? null,
  }));
}

async function labelOf(h, iq) {
  const value = await h.api("GET", `/v1/image-queries/${iq}`, h.config.adminToken);
  return value.result && value.result.source !== "STILL_PROCESSING" ? value.result.label : null;
}

/** The UI must not say "saved" for `iq`, and the cloud must not have a label for it. */
async function assertNotSaved(h, iq, what) {
  const seen = await onScreen(h.page);
  if (seen.status.includes(`saved for ${iq}`) && !seen.status.includes("NOT saved")) {
    throw new Error(`${what}: the page says "${seen.status}" but the label was not stored`);
  }
  const stored = await labelOf(h, iq);
  if (stored !== null) throw new Error(`${what}: the cloud has ${stored} for ${iq}, expected no label yet`);
  return seen;
}

async function waitSaved(h, iq, label, what) {
  await h.page.waitForFunction(
    ([iq, label]) => document.querySelector("[data-testid=last-action]")?.textContent === `${label} saved for ${iq}`,
    [iq, label],
  );
  return h.apiUntil(`/v1/image-queries/${iq}`, h.config.adminToken, (v) => v.result?.label === label && v.result?.source !== "STILL_PROCESSING", what);
}

export async function failsave(h) {
  const { page, config, result } = h;
  const cases = {};
  await h.signIn(config.reviewerToken);
  await h.go("/review");
  await page.selectOption("select[aria-label='Detector filter']", config.detectorId);
  let item = await h.nextItem("");

  // 1. A label stored normally.
  await page.keyboard.press("y");
  await waitSaved(h, item.iq, "YES", "first label");
  cases.normal = { iq: item.iq, label: "YES" };
  item = await h.nextItem(item.id);

  // 2. The token is revoked (through the API) while the reviewer works.
  await h.api("DELETE", `/v1/tokens/${config.reviewerTokenId}`, config.adminToken);
  await page.keyboard.press("n");
  await page.waitForSelector("form[aria-label='Sign in again']");
  // The form can show when the next claim is refused, before the label's own write comes back.
  await page.waitForFunction((iq) => document.querySelector("[data-testid=last-action]")?.textContent?.includes(`NOT saved yet`) && document.querySelector("[data-testid=last-action]")?.textContent?.includes(iq), item.iq);
  const revoked = await assertNotSaved(h, item.iq, "revoked token");
  await h.shot("20-review-signin-again");
  await page.fill("#reauth-token", config.reviewerToken2);
  await page.click("form[aria-label='Sign in again'] button[type=submit]");
  await waitSaved(h, item.iq, "NO", "label sent after signing in again");
  await page.waitForSelector("form[aria-label='Sign in again']", { state: "detached" });
  cases.revoked = { iq: item.iq, label: "NO", statusWhileSignedOut: revoked.status };
  // An image refused while signed out is fetched again with the new token.
  await page.waitForFunction(() => {
    const img = document.querySelector(".review-main[data-item-id] [data-testid=viewer] img");
    return img && img.complete && img.naturalWidth > 0;
  });
  h.expectConsole();

  // 3. The label write fails with 503 every time (injected in the browser's network layer: the
  //    real cloud has no switch to fail on demand); the item comes back, answered again it saves.
  //    At phone size: the message must be on screen there too, not below the fold.
  await page.setViewportSize({ width: 390, height: 844 });
  item = await h.currentItem();
  const fail = (route) => route.fulfill({ status: 503, contentType: "application/json", body: JSON.stringify({ detail: "Service unavailable (injected by the test)" }) });
  await page.route("**/v1/review/items/*/label", fail);
  await page.route("**/v1/labels", fail);
  await page.keyboard.press("y");
  await page.waitForSelector("[data-testid=item-failure]");
  const failed503 = await assertNotSaved(h, item.iq, "server error");
  if (failed503.iq !== item.iq) throw new Error(`server error: ${failed503.iq} on screen, expected ${item.iq} back`);
  result.failurePhone = await page.$eval("[data-testid=item-failure]", (el) => {
    const r = el.getBoundingClientRect();
    const buttons = [...document.querySelectorAll(".answers .answer")].map((b) => b.getBoundingClientRect().bottom);
    return { top: r.top, bottom: r.bottom, width: r.width, innerHeight: window.innerHeight, scrollWidth: document.documentElement.scrollWidth, answersBottom: Math.max(...buttons) };
  });
  await h.shot("phone-review-save-failed");
  await page.setViewportSize({ width: 1280, height: 900 });
  await h.shot("21-review-save-failed");
  await page.unroute("**/v1/review/items/*/label", fail);
  await page.unroute("**/v1/labels", fail);
  await page.keyboard.press("y");
  await waitSaved(h, item.iq, "YES", "label saved after the server error");
  cases.serverError = { iq: item.iq, label: "YES", failure: failed503.failure };
  h.expectConsole();

  // 4. The browser goes offline: the label fails after its retries and the item comes back.
  item = await h.nextItem(item.id);
  await h.context.setOffline(true);
  await page.keyboard.press("n");
  await page.waitForSelector("[data-testid=item-failure]");
  const offline = await assertNotSaved(h, item.iq, "offline");
  if (offline.iq !== item.iq) throw new Error(`offline: ${offline.iq} on screen, expected ${item.iq} back`);
  await h.context.setOffline(false);
  await page.keyboard.press("n");
  await waitSaved(h, item.iq, "NO", "label saved back online");
  cases.offline = { iq: item.iq, label: "NO", failure: offline.failure };
  h.expectConsole();
  result.cases = cases;
}

export async function viewer(h) {
  const { page, config, result } = h;
  // After another scenario in the same browser the reviewer is still signed in.
  await h.go("/review");
  await page.waitForSelector("#token, header.topbar");
  if (await page.$("#token")) await h.signIn(config.adminToken);
  await h.go("/review");
  await page.selectOption("select[aria-label='Detector filter']", config.detectorId);
  let item = await h.nextItem("");
  const measure = () =>
    page.$eval("[data-testid=viewer]", (el) => {
      const frame = el.getBoundingClientRect();
      const img = el.querySelector("img");
      const box = img.getBoundingClientRect();
      return { zoom: Number(el.dataset.zoom), frameW: frame.width, frameH: frame.height, imgW: box.width, imgH: box.height, naturalW: img.naturalWidth, smooth: img.className };
    });
  await page.waitForFunction(() => {
    const img = document.querySelector("[data-testid=viewer] img");
    return img && img.complete && img.getBoundingClientRect().width > img.naturalWidth;
  });
  result.fitted = await measure();
  const frame = await page.$eval("[data-testid=viewer]", (el) => {
    const r = el.getBoundingClientRect();
    return { x: r.x + r.width / 2, y: r.y + r.height / 2 };
  });
  await page.mouse.move(frame.x, frame.y);
  await page.mouse.wheel(0, -600);
  await page.waitForFunction(() => Number(document.querySelector("[data-testid=viewer]")?.dataset.zoom) > 1.5);
  await page.mouse.down();
  await page.mouse.move(frame.x + 80, frame.y + 40, { steps: 4 });
  await page.mouse.up();
  result.zoomed = await measure();
  const transform = () => page.$eval(".viewer-stage", (el) => el.style.transform);
  result.zoomedTransform = await transform();
  await page.keyboard.press("m");
  await page.keyboard.press("y");
  item = await h.nextItem(item.id);
  result.nextItem = { ...(await measure()), transform: await transform() };
  await h.shot("22-review-zoomed");
  await page.keyboard.press("r");
  await page.waitForFunction(() => Number(document.querySelector("[data-testid=viewer]")?.dataset.zoom) === 1);
  result.reset = await measure();
  // "No model yet" turns into the active version without a reload once one is activated.
  result.predictionBefore = await page.textContent("[data-testid=prediction]");
  await h.api("POST", `/v1/detectors/${config.detectorId}/models/1/activate`, config.adminToken);
  await page.waitForFunction(() => document.querySelector("[data-testid=model-version]")?.textContent?.includes("v1 active now"), null, { timeout: 30000 });
  result.prediction = await page.textContent("[data-testid=prediction]");
}

const PHONE_PAGES = { "/review": "review", "/detectors": "detectors", "/detectors/{det}": "detector", "/detectors/{det}/models": "models", "/edges": "edges", "/tokens": "tokens" };

export async function phone(h, pages = PHONE_PAGES) {
  const { page, config, result } = h;
  await page.setViewportSize({ width: 390, height: 844 });
  result.phone = {};
  for (const [path, name] of Object.entries(pages)) {
    const hash = path.replace("{det}", config.detectorId);
    await h.go(hash);
    await page.waitForSelector(".page > *:not(.loading)");
    await page.waitForLoadState("networkidle");
    await page.waitForFunction(() => !document.querySelector(".notice.loading"));
    if (path === "/review") await page.waitForSelector(".review-main[data-item-id], .notice.empty");
    const layout = await page.evaluate(() => {
      const buttons = [...document.querySelectorAll(".answers .answer")].map((b) => b.getBoundingClientRect().bottom);
      const image = document.querySelector(".review-image")?.getBoundingClientRect();
      return {
        scrollWidth: document.documentElement.scrollWidth,
        innerWidth: window.innerWidth,
        answersBottom: buttons.length ? Math.max(...buttons) : null,
        imageTop: image ? image.top : null,
        imageBottom: image ? image.bottom : null,
      };
    });
    result.phone[path] = layout;
    await h.shot(`phone-${name}`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}
