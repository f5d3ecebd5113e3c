// Drives the built web UI in headless Debian Chromium (playwright-core, no browser download).
// Called by the pytest files beside it: `node browser.mjs <scenario> <config.json>`.
// Writes screenshots and result.json into config.outDir; exits non-zero on failure.
//
// Scenarios:
//   e2e    sign in (reviewer, then admin), label five items with the keyboard, undo,
//          create a detector, start a training job and play the worker through the
//          cloud's worker endpoints while the job page shows the progress; the admin
//          actions (cancel a running job, activate and roll back a version, switch a
//          detector OFF), each checked through the API; visit every page.
//   bench  a scripted reviewer labels config.count items as fast as the UI allows.
//   failsave, viewer, phone: see review_scenarios.mjs; boxes: see box_scenario.mjs;
//          overlay: see overlay_scenario.mjs; depth: see depth_scenario.mjs; "a+b" runs several in one browser.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { boxes } from "./box_scenario.mjs";
import { depth } from "./depth_scenario.mjs";
import { overlay } from "./overlay_scenario.mjs";
import { failsave, phone, viewer } from "./review_scenarios.mjs";

const [scenario, configPath] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configPath, "utf8"));
const shots = join(config.outDir, "screenshots");
mkdirSync(shots, { recursive: true });

const console_ = []; // console errors and warnings, page errors, failed requests
const result = { scenario, console: console_, steps: [], badResponses: [] };

function step(name, extra = {}) {
  result.steps.push({ name, at: Date.now(), ...extra });
  process.stderr.write(`step: ${name}\n`);
}

async function api(method, path, token, body) {
  const response = await fetch(`${config.baseUrl}${path}`, {
    method,
    headers: { "x-api-token": token, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path} -> ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const userDataDir = mkdtempSync(join(tmpdir(), "io-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: config.chromium ?? "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(config.timeoutMs ?? 15000);
page.on("console", (message) => {
  if (message.type() === "error" || message.type() === "warning") {
    console_.push({ type: message.type(), text: message.text(), url: page.url() });
  }
});
page.on("pageerror", (error) => console_.push({ type: "pageerror", text: String(error), url: page.url() }));
page.on("requestfailed", (request) => {
  // Object URLs revoked while an <img> still loads are not failures a person sees.
  if (!request.url().startsWith("blob:")) {
    console_.push({ type: "requestfailed", text: `${request.method()} ${request.url()} ${request.failure()?.errorText}`, url: page.url() });
  }
});
result.reviewCalls = [];
page.on("request", (request) => {
  if (request.url().includes("/v1/review/") && request.method() === "POST") result.reviewCalls.push(`${Date.now() % 100000} ${request.url().split("/v1/review/")[1]}`);
});
page.on("response", (response) => {
  if (response.status() >= 400) result.badResponses.push(`${response.request().method()} ${response.url()} ${response.status()}`);
});
// Anything that tries to leave this machine (a CDN font, a script) is a defect: record and block it.
const base = new URL(config.baseUrl);
await context.route("**/*", (route) => {
  const url = new URL(route.request().url());
  if (url.protocol === "blob:" || url.protocol === "data:" || url.host === base.host) return route.continue();
  console_.push({ type: "external", text: route.request().url(), url: page.url() });
  return route.abort();
});

/** Poll the API until `check(value)` holds; the UI said it is done, the cloud must agree. */
async function apiUntil(path, token, check, what) {
  const deadline = Date.now() + (config.timeoutMs ?? 15000);
  let value;
  while (Date.now() < deadline) {
    value = await api("GET", path, token);
    if (check(value)) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what}: the API still answers ${JSON.stringify(value).slice(0, 400)}`);
}

/** Console errors a scenario caused on purpose (a revoked token's 401s, an injected 503, offline). */
function expectConsole() {
  result.expectedConsole = [...(result.expectedConsole ?? []), ...console_.splice(0, console_.length)];
}

async function shot(name, fullPage = false) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage });
}

/**
 * Open a page of the app. Once it is loaded this changes the hash, as a click on a link
 * does: a full page load would cut off the last requests of the page being left (the
 * review page giving back its claimed items), which Chromium reports as failed.
 */
async function go(hash) {
  if (page.url().startsWith(config.baseUrl) && (await page.$("header.topbar")) !== null) {
    await page.evaluate((target) => {
      window.location.hash = target;
    }, hash);
  } else {
    await page.goto(`${config.baseUrl}/#${hash}`);
  }
}

async function signIn(token) {
  // Signed out already (the form is on screen): no page load, which would cut off the last
  // requests of the page just left.
  if (!page.url().startsWith(config.baseUrl) || (await page.$("#token")) === null) await page.goto(`${config.baseUrl}/`);
  await page.waitForSelector("#token");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("header.topbar");
}

async function signOut() {
  await page.click("header.topbar button:has-text('Sign out')");
  await page.waitForSelector("#token");
  // Let the page give back what it held before the next full page load.
  await page.waitForLoadState("networkidle");
}

async function currentItem() {
  return page.$eval(".review-main[data-item-id]", (el) => ({ id: el.dataset.itemId, iq: el.dataset.imageQueryId }));
}

/** Wait until an item other than `previousId` is on screen, or the queue is empty. */
async function nextItem(previousId) {
  await page.waitForFunction(
    (prev) => {
      const el = document.querySelector(".review-main[data-item-id]");
      if (el && el.dataset.itemId && el.dataset.itemId !== prev) {
        const img = el.querySelector("img");
        return !img || img.complete;
      }
      return document.body.innerText.includes("Nothing waits for review.");
    },
    previousId,
    { polling: "raf" },
  );
  const el = await page.$(".review-main[data-item-id]");
  return el ? currentItem() : null;
}

async function waitMeasures() {
  return page.evaluate(() => performance.getEntriesByName("io-review-wait").map((entry) => entry.duration));
}

async function e2e() {
  // A reviewer sees only what a reviewer can use.
  await page.goto(`${config.baseUrl}/`);
  await page.waitForSelector("#token");
  await shot("01-sign-in");
  await page.fill("#token", "io_not_a_real_token_at_all_000000");
  await page.click("button[type=submit]");
  await page.waitForSelector("[role=alert]");
  result.badTokenMessage = await page.textContent("[role=alert]");
  // The 401 of that deliberate bad sign-in is logged by Chromium itself; it is expected.
  result.expectedConsole = console_.splice(0, console_.length);
  await signIn(config.reviewerToken);
  result.reviewerNav = await page.$$eval("header nav a", (links) => links.map((a) => a.textContent));
  step("reviewer signed in", { nav: result.reviewerNav });
  await signOut();

  await signIn(config.adminToken);
  result.adminNav = await page.$$eval("header nav a", (links) => links.map((a) => a.textContent));
  step("admin signed in", { nav: result.adminNav });

  // Review: five labels by keyboard, then undo the last and answer it again.
  await go(`/review`);
  await page.selectOption("select[aria-label='Detector filter']", config.detectorId);
  let item = await nextItem("");
  await page.waitForFunction(() => !document.querySelector("[data-testid=remaining]")?.textContent?.includes("…"));
  result.remainingBefore = await page.textContent("[data-testid=remaining] strong");
  await shot("02-review");
  const keys = ["y", "n", "y", "y", "n"];
  const labels = {};
  for (const key of keys) {
    if (!item) throw new Error("the queue ran dry before five labels");
    labels[item.iq] = key === "y" ? "YES" : "NO";
    await page.keyboard.press(key);
    item = await nextItem(item.id);
  }
  const lastIq = Object.keys(labels).at(-1);
  await page.keyboard.press("z");
  await page.waitForFunction((iq) => document.querySelector(".review-main[data-item-id]")?.getAttribute("data-image-query-id") === iq, lastIq);
  step("undo brought back the last item", { iq: lastIq });
  const undone = await currentItem();
  await page.keyboard.press("u");
  labels[lastIq] = "UNCLEAR";
  item = await nextItem(undone.id);
  // The counter catches up once the cloud has stored the labels (the test checks the figure).
  if (config.remainingAfterLabels !== undefined) {
    await page
      .waitForFunction((most) => Number(document.querySelector("[data-testid=remaining] strong")?.textContent) <= most, config.remainingAfterLabels, { timeout: 10000 })
      .catch(() => undefined);
  } else await page.waitForTimeout(300);
  result.remainingAfter = await page.textContent("[data-testid=remaining] strong");
  result.labels = labels;
  result.uiWaitsMs = await waitMeasures();
  await shot("03-review-after-labels");
  // Skip: the item leaves the screen and goes back to the queue.
  if (item) {
    await page.keyboard.press("s");
    result.skipped = item.iq;
    await nextItem(item.id);
  }
  step("labeled five items", { labels });

  // Tablet width: the panel goes under the image.
  await page.setViewportSize({ width: 820, height: 1100 });
  await shot("04-review-tablet");
  await page.setViewportSize({ width: 1280, height: 900 });

  // Detectors: list, create a multi-class one, its page.
  await go(`/detectors`);
  await page.waitForSelector("[data-testid=detectors-table]");
  await page.waitForFunction(() => !document.querySelector("[data-testid=detectors-table]")?.textContent?.includes("…"));
  await shot("05-detectors");
  await page.click("button:has-text('New detector')");
  await page.fill("input[name=name]", config.newDetector.name);
  await page.fill("input[name=query]", config.newDetector.query);
  await page.selectOption("select[name=mode]", "MULTI_CLASS");
  await page.fill("input[name=class_names]", config.newDetector.classNames.join(", "));
  await page.fill("input[name=confidence_threshold]", "0.8");
  await shot("06-detector-create");
  await page.click("form[aria-label='New detector'] button[type=submit]");
  await page.waitForSelector(`h1:has-text('${config.newDetector.name}')`);
  result.createdDetectorUrl = page.url();
  step("created a detector", { url: page.url() });
  // Switch it OFF from its settings form.
  const createdId = decodeURIComponent(page.url().split("/detectors/")[1]);
  await page.selectOption("form[aria-label='Detector settings'] select[name=status]", "OFF");
  await page.click("form[aria-label='Detector settings'] button[type=submit]");
  await page.waitForSelector("form[aria-label='Detector settings'] [role=status]");
  await shot("06b-detector-off");
  result.detectorOff = await apiUntil(`/v1/detectors/${createdId}`, config.adminToken, (d) => d.status === "OFF", "detector OFF");
  step("switched the new detector OFF", { id: createdId });

  // The seeded detector's page: recent queries with thumbnails and the label distribution.
  await go(`/detectors/${config.detectorId}`);
  await page.waitForSelector("[data-testid=recent-queries] img");
  await page.waitForSelector("text=Label distribution");
  await shot("07-detector", true);
  // Edit the threshold.
  await page.fill("form[aria-label='Detector settings'] input[name=confidence_threshold]", "0.75");
  await page.click("form[aria-label='Detector settings'] button[type=submit]");
  await page.waitForSelector("form[aria-label='Detector settings'] [role=status]");
  step("changed the threshold");

  // Models and training: start a job, watch it progress while playing the worker.
  await go(`/detectors/${config.detectorId}/models`);
  await page.waitForSelector("text=Versions");
  await page.waitForSelector("text=Training jobs");
  await shot("08-models");
  await page.selectOption("select[aria-label=Trainer]", "fast");
  await page.click("button:has-text('Start training')");
  await page.waitForURL(/#\/training-jobs\//);
  const jobId = decodeURIComponent(page.url().split("/training-jobs/")[1]);
  result.jobId = jobId;
  await page.waitForSelector(".badge:has-text('queued')");
  await shot("09-job-queued");
  const claimed = await api("POST", "/v1/training-jobs/claim", config.workerToken);
  if (!claimed || claimed.id !== jobId) throw new Error(`worker claimed ${claimed?.id}, expected ${jobId}`);
  const epochs = [
    { epoch: 1, loss: 0.69, accuracy: 0.55, val_accuracy: 0.5 },
    { epoch: 2, loss: 0.45, accuracy: 0.78, val_accuracy: 0.72 },
    { epoch: 3, loss: 0.3, accuracy: 0.88, val_accuracy: 0.83 },
    { epoch: 4, loss: 0.22, accuracy: 0.93, val_accuracy: 0.86 },
  ];
  const seen = [];
  for (const [index, epoch] of epochs.entries()) {
    const progress = (index + 1) / (epochs.length + 1);
    await api("POST", `/v1/training-jobs/${jobId}/progress`, config.workerToken, {
      progress,
      eta_s: (epochs.length - index) * 7,
      message: `epoch ${epoch.epoch} of ${epochs.length}`,
      epoch,
    });
    const want = String(Math.round(progress * 100));
    await page.waitForSelector(`[role=progressbar][aria-valuenow='${want}']`);
    seen.push(Number(want));
    if (index === 2) await shot("10-job-running");
  }
  result.progressSeen = seen;
  // The worker's last steps: upload the new version (an admin call in this cloud), then complete.
  const form = new FormData();
  form.append("primary", new Blob([readFileSync(config.workerModel.path)]), "model.buf");
  form.append("manifest", JSON.stringify({ ...config.workerModel.manifest, training_job_id: jobId }));
  const uploaded = await fetch(`${config.baseUrl}/v1/detectors/${config.detectorId}/models`, {
    method: "POST",
    headers: { "x-api-token": config.adminToken },
    body: form,
  });
  if (!uploaded.ok) throw new Error(`model upload -> ${uploaded.status} ${await uploaded.text()}`);
  const version = (await uploaded.json()).version;
  result.producedVersion = version;
  await api("POST", `/v1/training-jobs/${jobId}/complete`, config.workerToken, { model_version: version });
  await page.waitForSelector(".badge:has-text('succeeded')");
  result.jobFinalText = await page.textContent("[data-testid=job-status]");
  await page.waitForSelector("[data-testid=job-decision]");
  result.jobDecision = await page.textContent("[data-testid=job-decision]");
  result.jobCrumbs = await page.textContent(".crumbs");
  await shot("11-job-done");
  step("training job watched to the end", { seen });

  if (config.compare) {
    await go(`/detectors/${config.detectorId}/models`);
    await page.waitForSelector("[data-testid=models-table]");
    await page.check(`input[aria-label='Compare v${config.compare[0]}']`);
    await page.check(`input[aria-label='Compare v${config.compare[1]}']`);
    await page.waitForSelector("[data-testid=compare-table]");
    result.compareText = await page.textContent("[data-testid=compare-table]");
    await shot("12-models-compare", true);
    step("compared two versions");
  }

  await adminActions();

  await go(`/edges`);
  await page.waitForSelector("[data-testid=edges-table], .notice.empty");
  result.edgeRows = await page.$$eval("[data-testid=edges-table] tbody tr", (rows) => rows.map((row) => row.textContent));
  await shot("13-edges");
  if (config.edgeId) {
    await go(`/edges/${config.edgeId}`);
    await page.waitForSelector(".chart svg, .notice.empty");
    result.edgeCharts = await page.$$eval(".chart", (charts) =>
      charts.map((c) => ({ title: c.querySelector("figcaption")?.textContent, legend: [...c.querySelectorAll(".legend li")].map((li) => li.textContent) })),
    );
    result.edgeSummary = await page.textContent("section[aria-label=Edge] p:not(.crumbs)");
    await shot("14-edge");
  }
  await go(`/tokens`);
  await page.waitForSelector("table");
  await shot("15-tokens");
  await tokensPage();
  await go(`/nowhere`);
  await page.waitForSelector("text=There is no page");
  step("visited every page");
  // The same pages at phone size: no sideways panning, review answers on screen.
  await phone(harness);
  step("phone layout");
}

/** Tokens: the new raw token is shown once with a copy button, gone once revoked; your own is marked. */
async function tokensPage() {
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: config.baseUrl });
  await page.fill("form[aria-label='New token'] input", "e2e-copied");
  await page.click("form[aria-label='New token'] button[type=submit]");
  const raw = (await page.textContent("[data-testid=new-token]")).trim();
  await page.click("button:has-text('Copy')");
  await page.waitForSelector("button:has-text('Copied')");
  const clipboard = await page.evaluate(() => navigator.clipboard.readText());
  const mine = await page.$$eval("[data-testid=tokens-table] tr", (rows) =>
    rows.filter((r) => r.textContent.includes("you (this tab)")).map((r) => ({ id: r.dataset.tokenId, revocable: Boolean(r.querySelector("button")) })),
  );
  const listed = await api("GET", "/v1/tokens", config.adminToken);
  const created = listed.find((t) => t.name === "e2e-copied");
  page.once("dialog", (dialog) => dialog.accept());
  await page.click(`[data-testid=tokens-table] tr[data-token-id='${created.id}'] button:has-text('Revoke')`);
  await page.waitForSelector(`[data-testid=tokens-table] tr[data-token-id='${created.id}']`, { state: "detached" });
  const stillShown = (await page.$("[data-testid=new-token]")) !== null || (await page.content()).includes(raw);
  result.tokens = { copiedMatches: clipboard === raw, mine, stillShown, revokedListed: (await api("GET", "/v1/tokens", config.adminToken)).some((t) => t.id === created.id) };
}

/** Cancel a running job, activate another version, roll back: each click checked through the API. */
async function adminActions() {
  // A second job, claimed by the worker so it runs, then cancelled from its page.
  await go(`/detectors/${config.detectorId}/models`);
  await page.waitForSelector("button:has-text('Start training')");
  await page.click("button:has-text('Start training')");
  await page.waitForURL(/#\/training-jobs\//);
  const jobId = decodeURIComponent(page.url().split("/training-jobs/")[1]);
  const claimed = await api("POST", "/v1/training-jobs/claim", config.workerToken);
  if (!claimed || claimed.id !== jobId) throw new Error(`worker claimed ${claimed?.id}, expected ${jobId}`);
  await api("POST", `/v1/training-jobs/${jobId}/progress`, config.workerToken, { progress: 0.3, eta_s: 40, message: "epoch 1 of 3" });
  await page.waitForSelector(".badge:has-text('running')");
  await page.click("button:has-text('Cancel job')");
  await page.waitForSelector(".badge:has-text('cancelled')");
  await shot("12b-job-cancelled");
  result.cancelledJob = await apiUntil(`/v1/training-jobs/${jobId}`, config.adminToken, (j) => j.status === "cancelled", "job cancelled");
  step("cancelled a running job", { jobId });

  // Activate a version other than the active one, then roll back to the one before.
  await go(`/detectors/${config.detectorId}/models`);
  await page.waitForSelector("[data-testid=models-table]");
  const modelsPath = `/v1/detectors/${config.detectorId}/models`;
  const activeOf = (models) => models.find((m) => m.status === "active")?.version ?? null;
  const versions = await api("GET", modelsPath, config.adminToken);
  const before = activeOf(versions);
  const target = versions.map((m) => m.version).filter((v) => v !== before).sort((a, b) => a - b)[0];
  await page.click(`[data-testid=models-table] tr[data-version='${target}'] button:has-text('Activate')`);
  // Activation asks first and says what changes; nothing changes before the answer.
  await page.waitForSelector("[role=dialog][aria-label='Confirm model change']");
  result.activateConfirm = await page.textContent("[role=dialog][aria-label='Confirm model change']");
  result.activeWhileAsking = activeOf(await api("GET", modelsPath, config.adminToken));
  await shot("12a-models-confirm");
  await page.click(`button:has-text('Yes, activate v${target}')`);
  await page.waitForSelector(`[data-testid=models-table] tr[data-version='${target}'] .badge:has-text('active')`);
  const activated = await apiUntil(modelsPath, config.adminToken, (m) => activeOf(m) === target, `activate v${target}`);
  step("activated a version", { before, target });
  await page.click("button:has-text('Roll back')");
  result.rollbackConfirm = await page.textContent("[role=dialog][aria-label='Confirm model change']");
  await page.click("button:has-text('Yes, roll back')");
  await page.waitForSelector(`[data-testid=models-table] tr[data-version='${before}'] .badge:has-text('active')`);
  const rolledBack = await apiUntil(modelsPath, config.adminToken, (m) => activeOf(m) === before, "roll back");
  await page.waitForSelector("[data-testid=edge-learning] svg");
  await shot("12c-models-rolled-back", true);
  result.activation = { before, target, afterActivate: activeOf(activated), afterRollback: activeOf(rolledBack) };
  step("rolled back", result.activation);
}

async function bench() {
  if (config.latencyMs) {
    // Every request waits this long for its answer, as on a far-away cloud (Chromium's own
    // network emulation: applies to fetches and images alike).
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: config.latencyMs, downloadThroughput: -1, uploadThroughput: -1 });
  }
  await signIn(config.adminToken);
  await go(`/review`);
  if (config.detectorId) await page.selectOption("select[aria-label='Detector filter']", config.detectorId);
  let item = await nextItem("");
  // Let the first preloads settle, as a reviewer would take a second to read the first image.
  await page.waitForTimeout(500);
  const clientWaits = [];
  const started = performance.now();
  let labeled = 0;
  while (item && labeled < config.count) {
    // A person looks at the image before answering; the bench can too (thinkMs).
    if (config.thinkMs) await page.waitForTimeout(config.thinkMs);
    const before = performance.now();
    await page.keyboard.press(labeled % 3 === 0 ? "n" : "y");
    labeled += 1;
    item = await nextItem(item.id);
    clientWaits.push(performance.now() - before);
  }
  const elapsed = performance.now() - started;
  result.labeled = labeled;
  result.elapsedMs = elapsed;
  result.clientWaitsMs = clientWaits;
  result.uiWaitsMs = await waitMeasures();
  // Whether each next item was already in memory at the key press (else it waited for a claim).
  result.uiInMemory = await page.evaluate(() => performance.getEntriesByName("io-review-wait").map((entry) => Boolean(entry.detail?.inMemory)));
  result.timeline = await page.evaluate(() => [
    ...performance.getEntriesByName("io-review-wait").map((e) => ({ what: "wait", start: e.startTime, end: e.startTime + e.duration })),
    ...performance
      .getEntriesByType("resource")
      .filter((e) => e.name.includes("/v1/"))
      .map((e) => ({ what: e.name.replace(/^.*\/v1\//, "").replace(/rvw_\w+/, "ITEM").replace(/iq_\w+/, "IQ"), start: e.startTime, end: e.responseEnd })),
  ].sort((a, b) => a.start - b.start));
  await shot("bench-end");
}

const harness = { page, context, config, result, api, apiUntil, shot, go, signIn, nextItem, currentItem, expectConsole };
const SCENARIOS = { e2e, bench, failsave: () => failsave(harness), viewer: () => viewer(harness), phone: () => phone(harness), boxes: () => boxes(harness), overlay: () => overlay(harness), depth: () => depth(harness) };

let failed = null;
try {
  for (const name of scenario.split("+")) {
    if (!SCENARIOS[name]) throw new Error(`unknown scenario ${name}`);
    step(`scenario ${name}`);
    await SCENARIOS[name]();
  }
} catch (error) {
  failed = error;
  result.error = String(error?.stack ?? error);
  await shot("failure").catch(() => undefined);
} finally {
  writeFileSync(join(config.outDir, "result.json"), JSON.stringify(result, null, 2));
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
if (failed) {
  process.stderr.write(`${result.error}\n`);
  process.exit(1);
}
