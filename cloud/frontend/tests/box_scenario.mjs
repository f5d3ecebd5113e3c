// Browser scenario of the review page's box editor (imported by browser.mjs):
//   boxes  on a BOUNDING_BOX detector: draw three boxes with the mouse, confirm with Enter and
//          see the cloud refuse more than max_num_bboxes (message on screen, nothing stored);
//          delete one with the Delete key, move one by dragging, confirm; confirm the model's
//          boxes (pre-labels) untouched with Enter; confirm no boxes (NO_OBJECTS). On a COUNT
//          detector: draw a box, type another count, confirm. Each checked through the API.

/** The box editor's rectangle on screen, to turn image fractions into mouse positions. */
async function editorRect(page) {
  await page.waitForFunction(() => {
    const img = document.querySelector(".review-main[data-item-id] [data-testid=viewer] img");
    const editor = document.querySelector("[data-testid=box-editor]");
    return img && img.complete && img.naturalWidth > 0 && editor && editor.getBoundingClientRect().width > 100;
  });
  return page.$eval("[data-testid=box-editor]", (el) => {
    const r = el.getBoundingClientRect();
    return { x: r.x, y: r.y, w: r.width, h: r.height };
  });
}

async function dragFraction(page, rect, from, to) {
  await page.mouse.move(rect.x + from[0] * rect.w, rect.y + from[1] * rect.h);
  await page.mouse.down();
  await page.mouse.move(rect.x + to[0] * rect.w, rect.y + to[1] * rect.h, { steps: 5 });
  await page.mouse.up();
}

const boxCount = (page) => page.$eval("[data-testid=box-editor]", (el) => Number(el.dataset.boxes));

async function waitBoxes(page, n) {
  await page.waitForFunction((n) => Number(document.querySelector("[data-testid=box-editor]")?.dataset.boxes) === n, n);
}

/** The page says the label is saved (or, after the last item, shows the empty queue) and the cloud has it. */
async function waitSaved(h, iq, label) {
  await h.page.waitForFunction(
    ([iq, label]) =>
      document.querySelector("[data-testid=last-action]")?.textContent === `${label} saved for ${iq}` ||
      document.body.innerText.includes("Nothing waits for review."),
    [iq, label],
  );
  const answer = (r) => (r?.result_type === "counting" ? String(r.count) : r?.label);
  await h.apiUntil(`/v1/image-queries/${iq}`, h.config.adminToken, (v) => v.result?.source === "USER" && answer(v.result) === label, `${label} for ${iq}`);
}

export async function boxes(h) {
  const { page, config, result } = h;
  // The cloud has no detection model here, so its queries have no boxes: the model's boxes
  // (pre-labels) of one query are added to its claim answer in Chromium's network layer.
  await page.route("**/v1/review/claim*", async (route) => {
    const response = await route.fetch();
    const item = response.status() === 200 ? await response.json() : null;
    if (item?.image_query_id !== config.prelabeledIq) return route.fulfill({ response });
    return route.fulfill({ response, json: { ...item, rois: config.prelabels } });
  });
  await h.signIn(config.reviewerToken);
  await h.go("/review");
  await page.selectOption("select[aria-label='Detector filter']", config.boxDetectorId);
  const done = {};
  let item = await h.nextItem("");
  while (item) {
    let rect = await editorRect(page);
    if (item.iq === config.prelabeledIq) {
      // The model's boxes are on screen; they are right, so one key confirms them.
      await waitBoxes(page, config.prelabels.length);
      await h.shot("31-review-prelabels");
      await page.keyboard.press("Enter");
      await waitSaved(h, item.iq, "BOUNDING_BOX");
      done.prelabeled = item.iq;
    } else if (!done.edited) {
      await dragFraction(page, rect, [0.1, 0.1], [0.3, 0.3]);
      await dragFraction(page, rect, [0.5, 0.5], [0.7, 0.7]);
      await dragFraction(page, rect, [0.75, 0.1], [0.9, 0.3]);
      await waitBoxes(page, 3);
      await h.shot("30-review-boxes-drawn");
      await page.keyboard.press("Enter");
      await page.waitForSelector("[data-testid=item-failure]");
      const refused = await page.textContent("[data-testid=item-failure]");
      const onScreen = await h.currentItem();
      const stored = await h.api("GET", `/v1/image-queries/${item.iq}`, config.adminToken);
      result.refused = { message: refused, iq: onScreen.iq, source: stored.result.source, boxesBack: await boxCount(page) };
      await h.shot("32-review-boxes-refused");
      h.expectConsole(); // the 400 of the refused label, on purpose
      // Click the third box, delete it with the key, then drag the second one (measured again:
      // the error banner above moved the image).
      rect = await editorRect(page);
      await page.mouse.click(rect.x + 0.82 * rect.w, rect.y + 0.2 * rect.h);
      await page.keyboard.press("Delete");
      await waitBoxes(page, 2);
      await dragFraction(page, rect, [0.6, 0.6], [0.7, 0.65]);
      await page.keyboard.press("Enter");
      await waitSaved(h, item.iq, "BOUNDING_BOX");
      done.edited = item.iq;
    } else {
      await page.keyboard.press("Enter");
      await waitSaved(h, item.iq, "NO_OBJECTS");
      done.empty = item.iq;
    }
    item = await h.nextItem(item.id);
  }

  await page.selectOption("select[aria-label='Detector filter']", config.countDetectorId);
  item = await h.nextItem("");
  const rect = await editorRect(page);
  await dragFraction(page, rect, [0.2, 0.2], [0.4, 0.5]);
  await waitBoxes(page, 1);
  await page.fill("[data-testid=count-input]", "4");
  result.countShown = await page.textContent("[data-testid=box-count]");
  await page.press("[data-testid=count-input]", "Enter");
  await waitSaved(h, item.iq, "4");
  done.counted = item.iq;
  result.boxCases = done;
}
