// Real-browser approval: signs in to the portcullis approvals page with an approver token, finds
// the pending request card, optionally screenshots the page, clicks "Approve", and checks that the
// page it lands on no longer lists the request as pending (and shows it as approved).
//
// Driven by playwright-core against Debian's chromium (/usr/bin/chromium): no browser is ever
// downloaded. Used by tests/pg_browser.rs; runnable by hand against a live gateway:
//
//   PORTCULLIS_TOKEN=pct_... node tests/browser/approve.mjs \
//       --url http://127.0.0.1:8443/ --request apr_XXXXXXXXXXXX \
//       [--statement 'insert into t values (7)'] [--screenshot out.png] [--viewport 480x900]
//
// The token comes from --token-file FILE or the PORTCULLIS_TOKEN environment variable (never
// argv, which other users can read in ps). Exit status: 0 = approved and checked, 1 = a step failed
// (the message says which, with the page's URL and text), 2 = bad usage or missing browser.
// Every step is bounded (STEP_TIMEOUT_MS), and a watchdog ends the whole run.

import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

const STEP_TIMEOUT_MS = 20_000;
const LAUNCH_TIMEOUT_MS = 30_000; // chromium's first start on a busy 2-core machine is slow
const WATCHDOG_MS = 120_000;

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage", // containers often have a tiny /dev/shm
  "--no-proxy-server", // the gateway is on loopback; never route it through a proxy from the env
];

function usage(message) {
  process.stderr.write(
    `approve.mjs: ${message}\n` +
      "usage: PORTCULLIS_TOKEN=pct_... node approve.mjs --url URL --request apr_ID " +
      "[--token-file FILE] [--statement TEXT] [--screenshot PNG] [--viewport WxH] [--chromium PATH]\n",
  );
  process.exit(2);
}

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        url: { type: "string" },
        request: { type: "string" },
        "token-file": { type: "string" },
        statement: { type: "string" },
        screenshot: { type: "string" },
        viewport: { type: "string", default: "1024x768" },
        chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    usage(e.message);
  }
  if (!values.url) usage("--url is required");
  if (!values.request || !/^apr_[A-Za-z0-9]{1,64}$/.test(values.request)) {
    usage(`--request must be a request id like apr_XXXXXXXXXXXX, got ${JSON.stringify(values.request)}`);
  }
  let token = process.env.PORTCULLIS_TOKEN || "";
  if (values["token-file"]) {
    try {
      token = readFileSync(values["token-file"], "utf8");
    } catch (e) {
      usage(`reading --token-file: ${e.message}`);
    }
  }
  token = token.trim();
  if (!token) usage("no approver token: set PORTCULLIS_TOKEN or pass --token-file");
  const m = /^(\d{2,5})x(\d{2,5})$/.exec(values.viewport);
  if (!m) usage(`--viewport must look like 480x900, got ${JSON.stringify(values.viewport)}`);
  if (!existsSync(values.chromium)) {
    usage(
      `no browser at ${values.chromium}: install Debian's chromium (apt-get install chromium, ` +
        "or run .ci/run), or pass --chromium PATH",
    );
  }
  return {
    url: values.url,
    id: values.request,
    token,
    statement: values.statement,
    screenshot: values.screenshot,
    viewport: { width: Number(m[1]), height: Number(m[2]) },
    chromium: values.chromium,
  };
}

async function loadPlaywright() {
  try {
    return (await import("playwright-core")).chromium;
  } catch (e) {
    usage(
      `cannot load playwright-core (${e.message}): run \`npm ci --prefix tests/browser\` ` +
        "(or .ci/run)",
    );
  }
}

class StepError extends Error {}

/** What the page shows, for failure messages: URL, title and the start of its text. */
async function describePage(page) {
  try {
    const text = (await page.locator("body").innerText({ timeout: 2_000 })).trim();
    const clipped = text.length > 1500 ? `${text.slice(0, 1500)}…` : text;
    return `page ${page.url()} (title ${JSON.stringify(await page.title())}):\n${clipped}`;
  } catch (e) {
    return `page ${page.url()} (could not read its text: ${e.message})`;
  }
}

async function step(page, name, fn) {
  try {
    return await fn();
  } catch (e) {
    const why = e instanceof StepError ? e.message : `${e.name}: ${e.message.split("\n")[0]}`;
    throw new StepError(`step "${name}" failed: ${why}\n--- ${await describePage(page)}`);
  }
}

async function main() {
  const opts = parseOptions();
  const chromium = await loadPlaywright();
  const watchdog = setTimeout(() => {
    process.stderr.write(`approve.mjs: gave up after ${WATCHDOG_MS} ms (watchdog)\n`);
    process.exit(1);
  }, WATCHDOG_MS);
  watchdog.unref();

  const profile = mkdtempSync(join(tmpdir(), "portcullis-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: opts.chromium,
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: LAUNCH_TIMEOUT_MS,
      viewport: opts.viewport,
      deviceScaleFactor: 1,
      acceptDownloads: false,
      serviceWorkers: "block",
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
    await run(page, opts);
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
}

async function run(page, { url, id, token, statement, screenshot }) {
  // Attribute selectors: ids are matched literally, no CSS escaping needed.
  const card = page.locator(`section.card[id="${id}"]`);

  await step(page, "open the approvals page and see the sign-in form", async () => {
    const resp = await page.goto(url, { waitUntil: "load" });
    if (!resp || resp.status() !== 200) {
      throw new StepError(`GET ${url} answered ${resp ? resp.status() : "nothing"}`);
    }
    await page.locator('form[action="/login"] input[name="token"][type="password"]').waitFor({
      state: "visible",
    });
  });

  await step(page, "sign in with the approver token", async () => {
    await page.locator('form[action="/login"] input[name="token"]').fill(token);
    await page.locator('form[action="/login"] button').click();
    // The POST answers with a redirect to "/" and a session cookie: then the page has the
    // signed-in header. A refused token gives the sign-in form again, with an error.
    const signedIn = page.locator("header .who");
    const refused = page.locator("p.err");
    await signedIn.or(refused).first().waitFor({ state: "visible" });
    if (await refused.isVisible()) {
      throw new StepError(`the page refused the token: ${await refused.innerText()}`);
    }
  });

  await step(page, `see the pending request card section#${id}`, async () => {
    await card.waitFor({ state: "visible" });
    const shown = (await card.locator("pre").innerText()).trim();
    if (statement !== undefined && shown !== statement.trim()) {
      throw new StepError(
        `the card shows ${JSON.stringify(shown)}, expected the statement ${JSON.stringify(statement)}`,
      );
    }
    const meta = await card.locator(".meta").first().innerText();
    if (!/pending/.test(meta)) throw new StepError(`the card is not pending: ${meta}`);
  });

  if (screenshot) {
    await step(page, `take a full-page screenshot to ${screenshot}`, async () => {
      // The page reloads itself every 5 s: capture a settled document, fonts loaded.
      await page.evaluate(() => document.fonts.ready);
      await page.screenshot({ path: screenshot, fullPage: true, animations: "disabled" });
    });
  }

  await step(page, 'click the card\'s "Approve" button', async () => {
    const button = card.locator(`form[action="/requests/${id}/approve"] button`, {
      hasText: "Approve",
    });
    const posted = page.waitForRequest(
      (r) => r.method() === "POST" && new URL(r.url()).pathname === `/requests/${id}/approve`,
    );
    await button.click();
    await posted;
  });

  await step(page, "see that the request is no longer pending", async () => {
    // The POST redirects to "/" (303), whose list of pending requests lacks the card; a refusal
    // is an error page ("Not done") at the POST's URL, which has no card either.
    await card.waitFor({ state: "detached" });
    await page.waitForLoadState("load");
    const err = page.locator("p.err");
    if (await err.count()) {
      throw new StepError(`the gateway refused the approval: ${await err.first().innerText()}`);
    }
    if (new URL(page.url()).pathname !== "/") {
      throw new StepError(`expected to land on "/" after approving, got ${page.url()}`);
    }
    await page.locator("h2#pending").waitFor({ state: "visible" });
    const row = page.locator("tr", { has: page.locator(`a[href="/requests/${id}"]`) });
    await row.waitFor({ state: "visible" });
    const state = (await row.locator("td").nth(1).innerText()).trim();
    if (state !== "approved") {
      throw new StepError(`recent decisions show ${id} as ${JSON.stringify(state)}, not "approved"`);
    }
  });

  process.stdout.write(`approve.mjs: approved ${id} in the browser\n`);
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`approve.mjs: ${e instanceof StepError ? e.message : e.stack || e}\n`);
    process.exit(1);
  },
);
