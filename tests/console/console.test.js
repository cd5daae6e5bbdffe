/*
 * The operator console in a real browser: Debian's Chromium, headless,
 * driven by puppeteer-core (installed by scripts/console_test.sh from
 * this folder's package-lock.json; nothing is downloaded at run time),
 * against a running system with the demo's data and sagas made to fail
 * (scripts/console_test.sh starts it).  Each view is loaded by its URL
 * and what it shows is checked; any error in the page's console, any
 * uncaught exception and any failed request fails the run.  Screenshots
 * go to $CONSOLE_SHOTS (build/console/shots).
 *
 *   CONSOLE_URL=http://127.0.0.1:8081/console/ CONSOLE_TOKEN=... node console.test.js
 */
"use strict";

const puppeteer = require("puppeteer-core");
const fs = require("fs");
const path = require("path");
const { spawnSync } = require("child_process");

const base = process.env.CONSOLE_URL;
const token = process.env.CONSOLE_TOKEN;
const readToken = process.env.CONSOLE_READ_TOKEN;
const commandUrl = process.env.CONSOLE_COMMAND_URL;
const esctl = process.env.CONSOLE_ESCTL || "build/plain/esctl";
const shots = process.env.CONSOLE_SHOTS || "build/console/shots";
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = process.env.CONSOLE_PROFILE || "build/console/profile";

const problems = [];
let passed = 0;

function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  passed++;
  console.log("ok   " + what);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });
}

async function text(page, selector) {
  return page.$eval(selector, (el) => el.innerText);
}

async function go(page, route, selector) {
  await page.goto(base + "#" + route, { waitUntil: "load" });
  await page.waitForSelector(selector, { timeout: 15000 });
}

/* Waits until fn(page) is true, polling; fails with what after ms. */
async function until(page, fn, what, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn(page)) return;
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  fs.mkdirSync(profile, { recursive: true });
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    userDataDir: profile,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning" || m.type() === "warn")
        problems.push("console " + m.type() + ": " + m.text());
    });
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    page.on("requestfailed", (r) => problems.push("request failed: " + r.url() + " " + (r.failure() || {}).errorText));
    page.on("response", (r) => {
      if (r.status() >= 400) problems.push("HTTP " + r.status() + " for " + r.url());
    });
    page.on("dialog", (d) => d.type() === "prompt" ? d.accept("browser test") : d.accept());

    // the files: their types and the policy
    const res = await page.goto(base, { waitUntil: "load" });
    check(res.headers()["content-security-policy"].startsWith("default-src 'self'"), "the page has CSP default-src 'self'");
    check(res.headers()["content-type"].startsWith("text/html"), "index.html is text/html");

    // sign in
    await page.waitForSelector("#signin-form");
    await shot(page, "01-signin");
    await page.type("#token", token);
    await page.click("#signin-form button[type=submit]");
    await page.waitForSelector("#ov-dead", { timeout: 15000 });
    check((await text(page, "#who")).includes("(admin)"), "signed in as an admin");

    // overview
    await until(page, async (p) => (await text(p, "#ov-eps .value")) !== "…", "a rate of events");
    check(/^[0-9.]+$/.test(await text(page, "#ov-eps .value")), "the overview shows events/s");
    check(/^[0-9.]+$/.test(await text(page, "#ov-cps .value")), "the overview shows commands/s");
    const daemons = await text(page, "#daemons");
    for (const d of ["es-command", "es-query", "es-relay", "es-projector", "es-saga"])
      check(daemons.includes(d), "overview lists " + d);
    // a probe may time out on a busy machine: the next poll says ready
    try {
      await until(page, async (p) => !(await text(p, "#daemons")).includes("not ready"), "every daemon ready", 60000);
    } catch (e) {
      throw new Error(e.message + ":\n" + (await text(page, "#daemons")));
    }
    check(true, "every daemon is ready");
    check(Number(await text(page, "#ov-sagas-failed .value")) >= 1, "overview counts failed sagas");
    check((await text(page, "#projections")).includes("sagas"), "overview lists the projections");
    await shot(page, "02-overview");

    // sagas, failed filter
    await go(page, "/sagas?state=failed", "#sagas");
    const rows = await page.$$eval("#sagas tr[data-saga]", (trs) => trs.map((tr) => tr.innerText));
    check(rows.length >= 1, "the failed filter lists failed sagas");
    check(rows.every((r) => r.includes("failed")), "every listed saga is failed");
    check(rows.some((r) => /refused/.test(r)), "a failed saga shows its error");
    const sagaId = await page.$eval("#sagas tr[data-saga]", (tr) => tr.dataset.saga);
    await shot(page, "03-sagas-failed");
    await go(page, "/sagas?state=completed", "#sagas");
    check(!(await text(page, "#sagas")).includes(sagaId), "the failed saga is not under completed");

    // one saga's timeline
    await go(page, "/saga/" + encodeURIComponent(sagaId), "#timeline");
    check((await text(page, "#saga-state")) === "failed", "the saga page shows its state");
    const tl = await text(page, "#timeline");
    check(tl.includes("SagaStarted") && tl.includes("SagaStepFailed"), "the timeline shows steps and failures");
    check(tl.includes("SagaCompensation"), "the timeline shows compensations");
    check(/(closed|open)/.test(await text(page, "#saga-breakers")), "the saga page shows the gateways' breakers");
    await shot(page, "04-saga");

    // the trace of that order, linked from its saga: every stage, as esctl trace shows
    await page.click('a[href^="#/trace/"]');
    await page.waitForSelector("#trace", { timeout: 30000 });
    const stages = await page.$$eval("#trace tr[data-stage]", (trs) => trs.map((t) => t.dataset.stage));
    for (const st of ["accepted", "committed", "published", "projected", "saga"])
      check(stages.includes(st), "the order's trace lists its " + st + " stages");
    check((await page.$$("#trace tr.slowest")).length === 1, "the trace marks its slowest stage");
    const traceId = (await text(page, "h1")).replace(/^Trace\s+/, "").trim();
    check(/^[0-9a-f]{32}$/.test(traceId), "the trace view names the trace id");
    await shot(page, "04b-trace");

    // streams by category and prefix, a stream, an event by position
    await go(page, "/streams?category=saga&prefix=order", "#streams");
    check((await text(page, "#streams")).includes("saga-" + sagaId), "streams by category and prefix list the saga's stream");
    await shot(page, "05-streams");
    await go(page, "/stream/" + encodeURIComponent("saga-" + sagaId), "#events");
    check((await text(page, "#events")).includes("SagaStateChanged"), "a stream's events are shown");
    const pos = await page.$eval("#events td.mono a", (a) => a.textContent);
    await go(page, "/event/" + pos, "#event");
    check((await text(page, "h1")).includes(pos), "a position opens its event");
    check((await text(page, "#event")).includes("saga-" + sagaId), "the event names its stream");
    // its correlation id: every event that shares it, the event among them
    await page.click("#event-correlation a");
    await page.waitForSelector("#correlated", { timeout: 15000 });
    check((await page.$$(`#correlated tr[data-position="${pos}"]`)).length === 1,
          "the event's correlation lists the event");
    await shot(page, "06b-correlation");
    await go(page, "/trace/" + traceId, "#trace");
    check((await page.$$("#trace tr[data-stage]")).length === stages.length, "a trace id opens the same trace");
    await shot(page, "06-event");

    // live feed: shows events as they commit, filtered, pausable
    await go(page, "/feed?category=account", "#feed");
    await new Promise((r) => setTimeout(r, 1500));      // its first poll takes the feed's end
    const customer = "console-" + Date.now();
    const dep = await fetch(commandUrl + "/v1/customers/" + customer + "/deposits", {
      method: "POST", headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
      body: JSON.stringify({ amount: 500 }) });
    check(dep.status === 201, "a deposit is accepted by es-command");
    await until(page, async (p) => (await text(p, "#feed")).includes("account-" + customer),
                "the deposit in the live feed");
    check(true, "the live feed shows an event as it commits");
    check(!(await text(page, "#feed")).includes("user-"), "the feed's category filter holds");
    await page.click("#feed-pause");
    check((await text(page, "#feed-pause")) === "Resume", "the feed can be paused");
    await shot(page, "07-feed");

    // dead letters: grouped; replaying one makes it disappear
    await go(page, "/dead-letters", "#dl-open");
    const dlIds = await page.$$eval("tr[data-dead-letter]", (trs) => trs.map((t) => t.dataset.deadLetter));
    check(dlIds.length >= 1, "dead letters are listed");
    check((await page.$$("section.group")).length >= 1, "dead letters are grouped by error");
    await shot(page, "08-dead-letters");
    const victim = dlIds[0];
    await page.click(`button[data-dead-letter="${victim}"]`);
    await until(page, async (p) => (await p.$(`tr[data-dead-letter="${victim}"]`)) === null,
                "dead letter " + victim + " to disappear");
    check(true, "a replayed dead letter disappears");
    await shot(page, "09-dead-letter-replayed");

    // projections, and a rebuild (esctl's) showing up as a new active version
    await go(page, "/projections", "#projections");
    check((await page.$$("#projections tr[data-projection]")).length >= 6, "every projection is shown");
    const versionOf = (p) => p.$eval('tr[data-projection="dashboard"] td.version', (td) => td.textContent);
    const before = Number(await versionOf(page));
    const rb = spawnSync(esctl, ["projection", "rebuild", "dashboard"], { encoding: "utf8", timeout: 120000 });
    check(rb.status === 0, "esctl projection rebuild dashboard: " + (rb.stderr || "").trim().split("\n").pop());
    await until(page, async (p) => Number(await versionOf(p)) > before, "the rebuilt version to be active");
    check(true, "the projections view shows the rebuilt version");
    await shot(page, "10-projections");

    // a rebuild started from the console (confirmed), its progress live up to 100 %
    const rebuildOf = 'tr[data-projection="accounts"]';
    const accountsBefore = Number(await page.$eval(rebuildOf + " td.version", (td) => td.textContent));
    // (the view redraws every second: a click from inside the page cannot hit a replaced button)
    await page.evaluate(() => document.querySelector('button[data-rebuild="accounts"]').click());
    await until(page, async (p) => (await text(p, "#flash")).includes("rebuild of accounts done"),
                "the rebuild's start");
    check(true, "a rebuild starts from the console after a confirmation");
    await until(page, async (p) => (await p.$(rebuildOf + ' .console-rebuild[data-state="done"]')) !== null,
                "the console's rebuild of accounts to finish", 60000);
    check(await page.$eval(rebuildOf + " .console-rebuild", (d) => d.dataset.progress) === "100",
          "the console's rebuild reaches 100 %");
    check((await text(page, rebuildOf + " .console-rebuild")).includes("100 %"), "its progress says 100 %");
    await until(page, async (p) => Number(await p.$eval(rebuildOf + " td.version", (td) => td.textContent)) > accountsBefore,
                "the rebuilt accounts version to be active");
    check(true, "the console's rebuilt version is active");
    await shot(page, "10b-projection-rebuilt");

    // a saga action: retry a failed saga (confirmed), recorded in its stream
    await go(page, "/sagas?state=failed", "#sagas-empty, #sagas tr[data-saga]");
    const other = await page.$$eval("#sagas tr[data-saga]", (trs) => trs.map((t) => t.dataset.saga));
    check(other.length >= 1, "a failed saga is left to retry");
    // the age filter is the server's: none of them has been failed for a day
    await go(page, "/sagas?state=failed&older_than=86400", "#sagas-empty, #sagas tr[data-saga]");
    check((await page.$$("#sagas tr[data-saga]")).length === 0 && (await page.$("#sagas-empty")) !== null,
          "no saga has been failed for over a day");
    await go(page, "/saga/" + encodeURIComponent(other[0]), "#saga-retry");
    await page.click("#saga-retry");
    await until(page, async (p) => (await text(p, "#flash")).includes("retry done"), "the retry's answer");
    check(true, "retry asks for confirmation and is done");
    await until(page, async (p) => (await text(p, "#timeline")).includes("by an operator"),
                "the retry in the saga's timeline");
    check(true, "the retry is recorded in the saga's stream");
    await shot(page, "11-saga-retried");

    // a batch action: tick failed sagas in the list, retry them in one confirmed action
    await go(page, "/sagas?state=failed", "#sagas-empty, #sagas tr[data-saga]");
    const ticks = await page.$$eval("#sagas input.pick", (cs) => cs.map((c) => c.value));
    check(ticks.length >= 1, "failed sagas can be ticked for a batch action");
    const chosen = ticks.slice(0, 2);
    for (const id of chosen) await page.click(`#sagas input.pick[value="${id}"]`);
    await page.click("#batch-retry");
    await until(page, async (p) => (await text(p, "#flash")).includes("batch retry: " + chosen.length + " done, 0 failed"),
                "the batch retry's answer");
    check(true, "a batch retry of " + chosen.length + " failed sagas is confirmed and done");
    await go(page, "/saga/" + encodeURIComponent(chosen[0]), "#timeline");
    await until(page, async (p) => (await text(p, "#timeline")).includes("by an operator"),
                "the batch retry in the saga's timeline");
    check(true, "the batch retry is recorded in each saga's stream");
    await shot(page, "12-sagas-batch");

    // a whole dead-letter group replayed in one confirmed action: the group disappears
    // two new orders of the customer who deposited above, on the demo's stock: the injected
    // failures (shipment, then the refund) end each saga failed with a dead letter of one group
    const origin = new URL(base).origin;
    const stock = await (await fetch(origin + "/v1/console/streams?category=stock&limit=1",
                                     { headers: { Authorization: "Bearer " + token } })).json();
    check(stock.streams.length === 1, "the demo's stock is listed");
    const sku = stock.streams[0].stream.slice("stock-".length);
    for (let i = 0; i < 2; i++) {
      const o = await fetch(commandUrl + "/v1/orders", {
        method: "POST", headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
        body: JSON.stringify({ customer_id: customer, items: [{ sku, quantity: 1, unit_price: 100 }] }) });
      check(o.status >= 200 && o.status < 300, "an order to fail is accepted (" + o.status + ")");
    }
    let groups = [];
    await go(page, "/dead-letters", "#dl-open");
    await until(page, async (p) => {
      // the same route again is no hash change, so nothing would redraw it: reload the page
      // (the token is in the tab's sessionStorage)
      await p.reload({ waitUntil: "load" });
      await p.waitForSelector("#dl-open", { timeout: 15000 });
      groups = await p.$$eval("section.group", (ss) => ss.map((g) => g.dataset.fingerprint));
      return groups.length > 0;
    }, "a dead-letter group to replay whole", 90000);
    {
      // (a saga that fails again may file a new dead letter of the same group: the replayed ids are what must go)
      const fp = groups[0];
      const ids = await page.$$eval(`section.group[data-fingerprint="${fp}"] tr[data-dead-letter]`,
                                    (trs) => trs.map((t) => t.dataset.deadLetter));
      await page.click(`section.group[data-fingerprint="${fp}"] button[data-fingerprint="${fp}"]`);
      await until(page, async (p) => (await text(p, "#flash")).includes("done"), "the group replay's answer");
      await until(page, async (p) => {
        for (const id of ids) if ((await p.$(`tr[data-dead-letter="${id}"]`)) !== null) return false;
        return true;
      }, "the dead letters of group " + fp + " to disappear");
      check(true, "a dead-letter group replayed whole: its " + ids.length + " dead letters disappear");
      await shot(page, "13-dead-letter-group-replayed");
    }

    // a read-only token shows, and cannot act
    await page.click("#signout");
    await page.waitForSelector("#signin-form");
    await page.type("#token", readToken);
    await page.click("#signin-form button[type=submit]");
    await page.waitForSelector("#ov-dead", { timeout: 15000 });
    check((await text(page, "#who")).includes("(read only)"), "signed in read-only");
    await go(page, "/saga/" + encodeURIComponent(sagaId), "#saga-retry");
    check(await page.$eval("#saga-retry", (b) => b.disabled), "a read-only token cannot retry");
    check(await page.$eval("#saga-compensate", (b) => b.disabled), "a read-only token cannot compensate");
  } finally {
    await browser.close();
  }
  if (problems.length) {
    console.error("problems in the page:\n  " + problems.join("\n  "));
    process.exit(1);
  }
  console.log(`console: ${passed} checks passed, screenshots in ${shots}`);
}

main().catch((e) => {
  console.error("console test failed: " + (e.stack || e));
  if (problems.length) console.error("problems in the page:\n  " + problems.join("\n  "));
  process.exit(1);
});
