// Real-browser tests of `keyway ui` (the settings page): headless Debian chromium
// driven by playwright-core, against the real `keyway` binary and `keyway testbed`.
//
//   KEYWAY_BIN=target/debug/keyway node scripts/ui-browser/test.mjs [NAME_PART...]
//
// Each scenario gets its own store (a fresh KEYWAY_HOME), its own testbeds and `keyway
// ui` processes (free ports), and a fresh browser context; all of them are stopped
// when it ends, passed, failed or timed out. Screenshots go to target/ui-shots/.
// Arguments, when given, run only the scenarios whose name contains one of them.

import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const KEYWAY = path.resolve(ROOT, process.env.KEYWAY_BIN || "target/debug/keyway");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = path.join(ROOT, "target/ui-shots");
const SCENARIO_TIMEOUT_MS = Number(process.env.UI_SCENARIO_TIMEOUT_MS || 60_000);
/** How long a single wait inside a scenario may take (selectors, conditions). */
const WAIT_MS = 15_000;
/** How long the page may take to show a change made elsewhere (SSE; the page polls the store every second). */
const LIVE_MS = 8_000;

mkdirSync(SHOTS, { recursive: true });
// A full run starts from no pictures (a picture left from an older run would mislead);
// a run of some scenarios drops only the failure pictures.
for (const f of readdirSync(SHOTS)) {
  if (f.endsWith(".png") && (f.startsWith("FAILED-") || process.argv.length <= 2)) rmSync(path.join(SHOTS, f));
}

// ---- processes ------------------------------------------------------------------

/** Every child still running, so an unexpected exit of this script kills them too. */
const live = new Set();
process.on("exit", () => {
  for (const p of live) {
    try {
      p.kill("SIGKILL");
    } catch {}
  }
});
// A wait left behind by a scenario that failed or timed out rejects once its context
// closes: that scenario is already reported.
process.on("unhandledRejection", (e) => {
  if (process.env.UI_VERBOSE) console.error(`(late rejection: ${e && e.message})`);
});
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => process.exit(130));
}

function stop(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const hard = setTimeout(() => {
      try {
        proc.kill("SIGKILL");
      } catch {}
    }, 3000);
    proc.once("exit", () => {
      clearTimeout(hard);
      resolve();
    });
    try {
      proc.kill("SIGTERM");
    } catch {
      resolve();
    }
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns something truthy (bounded); return that. */
async function until(what, fn, timeout = WAIT_MS, every = 100) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${last.message})` : ""}`);
    await sleep(every);
  }
}

function check(cond, why) {
  if (!cond) throw new Error(why);
}

// ---- one scenario's world ---------------------------------------------------------

class World {
  constructor(name, browser) {
    this.name = name;
    this.browser = browser;
    this.home = mkdtempSync(path.join(tmpdir(), "keyway-ui-browser-"));
    this.env = {
      ...process.env,
      KEYWAY_HOME: this.home,
      KEYWAY_NO_KEYCHAIN: "1",
      KEYWAY_STORE_KEY: randomBytes(32).toString("hex"),
      NO_COLOR: "1",
      RUST_LOG: process.env.RUST_LOG || "warn",
    };
    this.procs = [];
    this.contexts = [];
    this.servers = [];
    this.pageErrors = [];
    this.logs = [];
  }

  /** Start `keyway ARGS` and resolve with its first stdout line that `accept`s. */
  start(args, accept, what) {
    const proc = spawn(KEYWAY, args, { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    live.add(proc);
    proc.once("exit", () => live.delete(proc));
    this.procs.push(proc);
    let err = "";
    proc.stderr.on("data", (d) => {
      err = (err + d).slice(-4000);
    });
    this.logs.push(() => `${what} stderr:\n${err}`);
    return new Promise((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`${what} printed nothing within 20 s; stderr: ${err}`)), 20_000);
      const onData = (d) => {
        out += d;
        let nl;
        while ((nl = out.indexOf("\n")) >= 0) {
          const line = out.slice(0, nl).trim();
          out = out.slice(nl + 1);
          if (accept(line)) {
            clearTimeout(timer);
            proc.stdout.off("data", onData);
            proc.stdout.resume();
            resolve({ proc, line });
            return;
          }
        }
      };
      proc.stdout.on("data", onData);
      proc.once("exit", (code, sig) => {
        clearTimeout(timer);
        reject(new Error(`${what} exited (${code ?? sig}) before it was ready; stderr: ${err}`));
      });
    });
  }

  /** `keyway testbed KNOBS`: {mcp_url, issuer, stats_url}. */
  async testbed(...knobs) {
    const { line } = await this.start(["testbed", ...knobs], (l) => l.startsWith("{"), `testbed ${knobs.join(" ")}`);
    return JSON.parse(line);
  }

  /** `keyway ui`: {origin, login} (the login link works once). */
  async ui(...flags) {
    const { line } = await this.start(
      ["ui", "--no-open", "--idle-exit", "0", ...flags],
      (l) => /^http:\/\/127\.0\.0\.1:\d+\/login\?k=/.test(l),
      "keyway ui",
    );
    return { login: line, origin: new URL(line).origin };
  }

  /** Run a keyway command to its end; its stdout. */
  cli(...args) {
    return new Promise((resolve, reject) => {
      execFile(KEYWAY, args, { env: this.env, timeout: 30_000 }, (e, stdout, stderr) => {
        if (e) reject(new Error(`keyway ${args.join(" ")} failed: ${stderr || e.message}`));
        else resolve(stdout);
      });
    });
  }

  async list() {
    return JSON.parse(await this.cli("list", "--json"));
  }

  /** A fresh browser context (its pages' uncaught errors fail the scenario). */
  async context(options = {}) {
    const ctx = await this.browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
    ctx.setDefaultTimeout(WAIT_MS);
    this.contexts.push(ctx);
    ctx.on("page", (p) => {
      p.on("pageerror", (e) => this.pageErrors.push(`${p.url()}: ${e.message}`));
    });
    return ctx;
  }

  /** Log in with `ui`'s one-time link in a new context; the page, its event stream open. */
  async open(ui, options = {}) {
    const ctx = await this.context(options);
    const page = await ctx.newPage();
    const js = options.javaScriptEnabled !== false;
    const stream = js ? page.waitForResponse((r) => r.url() === `${ui.origin}/events`) : null;
    const resp = await page.goto(ui.login);
    check(resp && resp.ok(), `the login link answered ${resp && resp.status()}`);
    // The login page moves on to / by itself (a same-origin navigation).
    await page.waitForURL(`${ui.origin}/`);
    if (stream) {
      const s = await stream;
      check(s.ok(), `/events answered ${s.status()}`);
    }
    return { ctx, page };
  }

  /** A tiny http server of our own on 127.0.0.1 (another origin than the page's). */
  async serve(handler) {
    const server = http.createServer(handler);
    await new Promise((r) => server.listen(0, "127.0.0.1", r));
    this.servers.push(server);
    return `http://127.0.0.1:${server.address().port}`;
  }

  async shot(page, name, options = {}) {
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`), ...options });
  }

  async cleanup() {
    for (const c of this.contexts) await c.close().catch(() => {});
    for (const s of this.servers) {
      s.closeAllConnections?.();
      await new Promise((r) => s.close(r));
    }
    await Promise.all(this.procs.map(stop));
    rmSync(this.home, { recursive: true, force: true });
  }
}

// ---- page helpers -------------------------------------------------------------------

const card = (name) => `#cards article.card[data-name="${name}"]`;

/** The text of a card's `<dd>` for `<dt>` `key`. */
function cardField(page, name, key) {
  return page.$eval(
    card(name),
    (c, key) => {
      for (const d of c.querySelectorAll("dl > div")) {
        if (d.querySelector("dt")?.textContent.trim() === key) return d.querySelector("dd").textContent.trim();
      }
      return null;
    },
    key,
  );
}

/** Wait until the add dialog's probe shows class `cls`. */
async function probeShows(page, cls, timeout = WAIT_MS) {
  try {
    await page.waitForSelector(`#probe-result[data-class="${cls}"]`, { timeout });
  } catch (e) {
    const now = await page.$eval("#probe-result", (r) => `${r.dataset.class}: ${r.textContent}`).catch(() => "?");
    throw new Error(`the probe did not show "${cls}" (it shows ${now})`);
  }
}

async function dialogOpen(page, id) {
  return page.$eval(`#${id}`, (d) => d.open);
}

async function stats(tb) {
  const r = await fetch(tb.stats_url);
  return r.json();
}

/** Open the add dialog, type `url`, wait for the probe to say `cls`. */
async function typeUrl(page, url, cls) {
  await page.click("#add-open");
  await page.waitForSelector("#add-dialog[open]");
  await page.fill("#add-url", url);
  await probeShows(page, cls);
}

// ---- scenarios -----------------------------------------------------------------------

const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });

scenario("add-open-server", async (w) => {
  const tb = await w.testbed("--open");
  const ui = await w.ui();
  const { page } = await w.open(ui);
  await page.waitForSelector("#cards p.empty");
  await w.shot(page, "empty-state");
  await typeUrl(page, tb.mcp_url, "open");
  check(await page.isEnabled("#add-save"), "Add is disabled after an open probe");
  check(await page.isHidden("#add-authorize"), "Add & Authorize shows for an open server");
  await w.shot(page, "add-dialog-open-probe");
  await page.click("#add-save");
  const el = await page.waitForSelector('#cards article.card[data-state="ready"]');
  const name = await el.getAttribute("data-name");
  await page.waitForFunction(() => !document.querySelector("#add-dialog").open);
  const tools = await cardField(page, name, "Tools");
  check(/^[1-9]\d*$/.test(tools || ""), `the card's tool count is ${JSON.stringify(tools)}`);
  await w.shot(page, "add-open-server");

  await page.click(`${card(name)} .act-tools`);
  await page.waitForSelector("#tools-dialog[open] .tool");
  const echo = page.locator("#tools-dialog .tool", { has: page.locator("h3", { hasText: /^echo$/ }) });
  check((await echo.count()) === 1, "no echo tool in the tools dialog");
  await echo.locator("textarea").fill('{"text":"hi"}');
  await echo.locator('button[type="submit"]').click();
  const out = echo.locator("pre");
  await page.waitForFunction((pre) => !pre.hidden && pre.textContent !== "Calling…", await out.elementHandle());
  const text = (await out.textContent()).trim();
  check(text === "hi", `echo answered ${JSON.stringify(text)}`);
  await w.shot(page, "tools-echo");
});

scenario("add-and-authorize-oauth", async (w) => {
  const tb = await w.testbed();
  const ui = await w.ui();
  const { ctx, page } = await w.open(ui);
  await typeUrl(page, tb.mcp_url, "oauth");
  check(await page.isVisible("#add-authorize"), "Add & Authorize is not shown for an oauth probe");
  await w.shot(page, "add-dialog-oauth-probe");
  const popupP = ctx.waitForEvent("page");
  await page.click("#add-authorize");
  const popup = await popupP;
  await popup.waitForURL((u) => u.pathname === "/callback" && u.origin === ui.origin);
  await popup.waitForSelector("text=Signed in");
  const el = await page.waitForSelector('#cards article.card[data-state="authorized"]');
  await page.waitForFunction(() => !document.querySelector("#add-dialog").open);
  check((await page.$$("#cards article.card")).length === 1, "more than one card after one add");
  const name = await el.getAttribute("data-name");
  const listed = await w.list();
  check(listed.length === 1 && listed[0].name === name && listed[0].state === "authorized", `keyway list: ${JSON.stringify(listed)}`);
  await w.shot(page, "add-and-authorize-oauth");
});

scenario("token-only-server", async (w) => {
  const tb = await w.testbed("--no-dcr", "--no-device");
  const ui = await w.ui();
  const { page } = await w.open(ui);
  await typeUrl(page, tb.mcp_url, "token-only");
  check(await page.isHidden("#add-authorize"), "Add & Authorize shows for a token-only server");
  check(await page.isDisabled("#add-save"), "Add is enabled for a token-only server without a token");
  const title = await page.textContent("#probe-result h3");
  check(title.includes("Access token required"), `probe title: ${title}`);
  await w.shot(page, "token-only-probe");
  await page.click("#add-cancel");
  await page.waitForFunction(() => !document.querySelector("#add-dialog").open);

  await w.cli("add", tb.mcp_url, "--name", "tokenonly", "--no-authorize");
  await page.waitForSelector(card("tokenonly"), { timeout: LIVE_MS });
  const c = page.locator(card("tokenonly"));
  check((await c.locator('form.token-form input[name="token"]').count()) === 1, "the token-only card has no token form");
  check((await c.locator(".act-token").count()) === 1, "the token-only card has no token button");
  check((await c.locator(".act-authorize").count()) === 0, "the token-only card offers Authorize");
  await w.shot(page, "token-only-card");
});

scenario("slow-probe-overtaken-by-edit", async (w) => {
  // A: an OAuth server whose every MCP answer takes 3 s (its probe would say "oauth");
  // B: a fast open server (its probe says "open"). Only B's answer may ever show.
  const DELAY_MS = 3000;
  const [slow, fast] = await Promise.all([w.testbed("--delay", `mcp:${DELAY_MS}`), w.testbed("--open")]);
  const ui = await w.ui();
  const { page } = await w.open(ui);
  const aborted = [];
  page.on("requestfailed", (r) => {
    if (r.url().endsWith("/probe")) aborted.push(r.failure()?.errorText);
  });
  await page.click("#add-open");
  await page.fill("#add-url", slow.mcp_url);
  await page.waitForFunction(() => {
    const r = document.querySelector("#probe-result");
    return r.dataset.class === "pending" && r.textContent.includes("Checking");
  });
  // The probe of A is in flight: A has its MCP request (and holds the answer 3 s).
  await until("A to receive the probe's MCP request", async () => (await stats(slow)).endpoints.mcp >= 1);
  const aReached = Date.now();
  await page.fill("#add-url", fast.mcp_url);
  await probeShows(page, "open");
  const shown = await page.textContent("#probe-result");
  check(Date.now() - aReached < DELAY_MS, "B's result came only after A's answer was due: the test proves nothing");
  check(/tools/.test(shown), `B's result: ${shown}`);
  // Record every later change of the result.
  await page.evaluate(() => {
    window.__probeChanges = [];
    const r = document.querySelector("#probe-result");
    new MutationObserver(() => window.__probeChanges.push(`${r.dataset.class}: ${r.textContent}`)).observe(r, {
      attributes: true,
      childList: true,
      subtree: true,
      characterData: true,
    });
  });
  // Wait until A's answer to the probe has certainly been sent: a request of our own
  // to A, made after the probe's, is answered DELAY_MS later, after the probe's.
  await fetch(slow.mcp_url, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
  }).catch(() => {});
  check(Date.now() - aReached >= DELAY_MS, "A answered before its delay");
  // Bounded grace for the UI to relay A's answer had it still been waiting for it
  // (discovery after a 401 is quick, undelayed requests); nothing may change meanwhile.
  await page.waitForTimeout(1000);
  const changes = await page.evaluate(() => window.__probeChanges);
  const cls = await page.$eval("#probe-result", (r) => r.dataset.class);
  check(cls === "open", `after A's answer was due the probe shows "${cls}"`);
  check(changes.length === 0, `the probe result changed after B's was shown: ${JSON.stringify(changes)}`);
  check(aborted.length >= 1, "the browser never cancelled A's probe request");
  check(await page.isEnabled("#add-save"), "Add is not enabled for B");
  await w.shot(page, "slow-probe-overtaken");
});

scenario("declined-authorization-rolls-back", async (w) => {
  const tb = await w.testbed("--deny");
  const ui = await w.ui();
  const { ctx, page } = await w.open(ui);
  await typeUrl(page, tb.mcp_url, "oauth");
  const popupP = ctx.waitForEvent("page");
  await page.click("#add-authorize");
  const popup = await popupP;
  await popup.waitForURL((u) => u.pathname === "/callback");
  await page.waitForFunction(() => {
    const t = document.querySelector("#probe-result").textContent;
    return t.includes("Authorization declined") && t.includes("Nothing was saved");
  });
  check(await dialogOpen(page, "add-dialog"), "the add dialog closed after a declined authorization");
  check(await page.isEnabled("#add-authorize"), "Add & Authorize stays disabled after the decline");
  check((await page.$$("#cards article.card")).length === 0, "a card exists after a declined add");
  await page.waitForSelector("#cards p.empty");
  const listed = await w.list();
  check(listed.length === 0, `keyway list after a declined add: ${JSON.stringify(listed)}`);
  check((await stats(tb)).denials >= 1, "the testbed denied nothing");
  await w.shot(page, "declined-authorization");
});

scenario("closing-the-dialog-cancels-add-and-authorize", async (w) => {
  const tb = await w.testbed();
  const ui = await w.ui();
  const { ctx, page } = await w.open(ui);
  // The person never finishes signing in: the authorization page is held back.
  await ctx.route(`${tb.issuer}/authorize**`, (r) => r.fulfill({ status: 200, contentType: "text/plain", body: "held by the test" }));
  await typeUrl(page, tb.mcp_url, "oauth");
  const popup = ctx.waitForEvent("page");
  await page.click("#add-authorize");
  await popup;
  // While it waits, the new server's card says so.
  await page.waitForSelector("#cards .card .flow-running");
  await page.click("#add-cancel");
  await page.waitForFunction(() => document.querySelector("#notice").textContent.includes("nothing was saved"));
  await page.waitForSelector("#cards p.empty");
  const listed = await w.list();
  check(listed.length === 0, `keyway list after a cancelled add: ${JSON.stringify(listed)}`);
  check((await stats(tb)).code_exchanges === 0, "a code was exchanged for a cancelled add");
});

scenario("two-authorizations-at-once", async (w) => {
  const [a, b] = await Promise.all([w.testbed(), w.testbed()]);
  await w.cli("add", a.mcp_url, "--name", "alpha", "--no-authorize");
  await w.cli("add", b.mcp_url, "--name", "beta", "--no-authorize");
  const ui = await w.ui();
  const { ctx, page } = await w.open(ui);
  for (const n of ["alpha", "beta"]) {
    await page.waitForSelector(`${card(n)}[data-state="needs-auth"] .act-authorize`);
  }
  const popups = [];
  ctx.on("page", (p) => popups.push(p));
  await page.click(`${card("alpha")} .act-authorize`);
  await page.click(`${card("beta")} .act-authorize`);
  await until("two sign-in tabs", () => popups.length >= 2);
  await page.waitForSelector(`${card("alpha")}[data-state="authorized"]`);
  await page.waitForSelector(`${card("beta")}[data-state="authorized"]`);
  for (const p of popups) {
    await p.waitForSelector("text=Signed in");
  }
  const listed = await w.list();
  check(listed.every((s) => s.state === "authorized") && listed.length === 2, `keyway list: ${JSON.stringify(listed)}`);
  check((await stats(a)).code_exchanges === 1 && (await stats(b)).code_exchanges === 1, "each testbed should see exactly one code exchange");
  await w.shot(page, "two-authorizations");
});

scenario("device-grant-shows-its-code", async (w) => {
  const tb = await w.testbed();
  await w.cli("add", tb.mcp_url, "--name", "tv", "--no-authorize");
  const ui = await w.ui("--device");
  const { ctx, page } = await w.open(ui);
  // The tab the page opens on the verification page is held back, so the code stays
  // on the card until this test approves the grant itself.
  await ctx.route(`${tb.issuer}/**`, (r) => r.fulfill({ status: 200, contentType: "text/plain", body: "held by the test" }));
  await page.waitForSelector(`${card("tv")}[data-state="needs-auth"] .act-authorize`);
  await page.click(`${card("tv")} .act-authorize`);
  const code = (await (await page.waitForSelector(`${card("tv")} .user-code`)).textContent()).trim();
  check(code.length >= 4, `the user code on the card: ${JSON.stringify(code)}`);
  const where = await page.$eval(`${card("tv")} .flow a`, (a) => a.href);
  check(where.startsWith(tb.issuer), `the verification link: ${where}`);
  await w.shot(page, "device-code");
  // The person enters the code elsewhere: the testbed approves at its complete URI.
  const approved = await fetch(where);
  check(approved.ok, `approving at ${where}: HTTP ${approved.status}`);
  await page.waitForSelector(`${card("tv")}[data-state="authorized"]`);
  check((await w.list())[0].state === "authorized", "keyway list shows it authorized");
});

scenario("opened-by-keyway-through-a-file", async (w) => {
  const tb = await w.testbed("--open");
  await w.cli("add", tb.mcp_url, "--name", "docs");
  // A stand-in for the system browser: it records what keyway asked it to open.
  const seen = path.join(w.home, "browser-was-given");
  const fake = path.join(w.home, "fake-browser.sh");
  writeFileSync(fake, `#!/bin/sh\nprintf '%s' "$1" > '${seen}'\n`, { mode: 0o700 });
  w.env.BROWSER = fake;
  const { line } = await w.start(["ui", "--idle-exit", "0"], (l) => /^http:\/\/127\.0\.0\.1:\d+\/login\?k=/.test(l), "keyway ui");
  const origin = new URL(line).origin;
  await until("keyway to start the browser", () => existsSync(seen));
  const given = readFileSync(seen, "utf8");
  check(given.startsWith("file://"), `the browser was given ${given}`);
  check(!given.includes("k="), "the link's secret reached a process's arguments");
  const file = fileURLToPath(given);
  check((statSync(file).mode & 0o077) === 0, `the redirect file can be read by others: ${(statSync(file).mode & 0o777).toString(8)}`);
  // The browser opens that file: it must end on the page with a session (SameSite=Strict
  // cookies survive a navigation that starts at a file only if the page moves on itself).
  const ctx = await w.context();
  const page = await ctx.newPage();
  const stream = page.waitForResponse((r) => r.url() === `${origin}/events`);
  await page.goto(given);
  await page.waitForURL(`${origin}/`);
  check((await stream).ok(), "the event stream was refused");
  await page.waitForSelector(`${card("docs")}[data-state="ready"]`);
  // The printed link was the same one-time link: used up now.
  const other = await (await w.context()).newPage();
  const again = await other.goto(line);
  check(again.status() === 403, `the printed link still worked after the browser used it: ${again.status()}`);
  await w.shot(page, "opened-through-file");
});

scenario("a-stored-registration-is-reused", async (w) => {
  const tb = await w.testbed();
  // Registered and authorized from the command line first, then signed out.
  await w.cli("add", tb.mcp_url, "--name", "crm", "--browser", "follow");
  await w.cli("logout", "crm");
  const registered = (await stats(tb)).registrations;
  check(registered === 1, `registrations before the page: ${registered}`);
  const ui = await w.ui();
  const { ctx, page } = await w.open(ui);
  await page.waitForSelector(`${card("crm")}[data-state="needs-auth"] .act-authorize`);
  const popup = ctx.waitForEvent("page");
  await page.click(`${card("crm")} .act-authorize`);
  await (await popup).waitForSelector("text=Signed in");
  await page.waitForSelector(`${card("crm")}[data-state="authorized"]`);
  const after = (await stats(tb)).registrations;
  check(after === 1, `the page registered again (${after} registrations): the stored one should be reused`);
});

scenario("cli-change-appears-live", async (w) => {
  const tb = await w.testbed("--open");
  const ui = await w.ui();
  const { page } = await w.open(ui);
  await page.waitForSelector("#cards p.empty");
  // A marker that a reload would lose.
  await page.evaluate(() => (window.__noReload = true));
  await w.cli("add", tb.mcp_url, "--name", "cli-added");
  await page.waitForSelector(`${card("cli-added")}[data-state="ready"]`, { timeout: LIVE_MS });
  await w.cli("disable", "cli-added");
  await page.waitForSelector(`${card("cli-added")}[data-state="disabled"]`, { timeout: LIVE_MS });
  check(await page.isVisible(`${card("cli-added")} .act-enable`), "a disabled card offers no Enable");
  check(await page.evaluate(() => window.__noReload === true), "the page reloaded");
  await w.shot(page, "cli-change-live");
});

scenario("remove-via-dialog", async (w) => {
  const tb = await w.testbed("--open");
  await w.cli("add", tb.mcp_url, "--name", "keepme");
  await w.cli("add", tb.mcp_url, "--name", "dropme");
  const ui = await w.ui();
  const { page } = await w.open(ui);
  await page.waitForSelector(card("dropme"));
  await page.click(`${card("dropme")} .act-remove`);
  try {
    await page.waitForSelector("#remove-dialog[open]", { timeout: 5000 });
  } catch {
    throw new Error("clicking Remove opened no dialog (the remove form never submitted)");
  }
  const text = await page.textContent("#remove-text");
  check(text.includes("dropme"), `the remove dialog names ${text}`);
  await w.shot(page, "remove-dialog");
  await page.click("#remove-confirm");
  await page.waitForSelector(card("dropme"), { state: "detached" });
  check(await page.isVisible(card("keepme")), "the other card went too");
  const names = (await w.list()).map((s) => s.name);
  check(!names.includes("dropme") && names.includes("keepme"), `keyway list: ${names}`);
  await w.shot(page, "removed");
});

scenario("keyboard-only-add", async (w) => {
  const tb = await w.testbed("--open");
  const ui = await w.ui();
  const { page } = await w.open(ui);
  let focusSeen = false;
  const focusVisible = () =>
    page.evaluate(() => {
      const a = document.activeElement;
      if (!a || a === document.body || !a.matches(":focus-visible")) return false;
      const s = getComputedStyle(a);
      return s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0;
    });
  let reached = false;
  for (let i = 0; i < 30 && !reached; i++) {
    await page.keyboard.press("Tab");
    focusSeen ||= await focusVisible();
    reached = await page.evaluate(() => document.activeElement?.id === "add-open");
  }
  check(reached, "Tab never reached the Add server button");
  check(await focusVisible(), "the focused Add server button shows no visible focus ring");
  await w.shot(page, "keyboard-focus-add-button");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#add-dialog[open]");
  check(await page.evaluate(() => document.activeElement?.id === "add-url"), "the URL field is not focused when the dialog opens");
  focusSeen ||= await focusVisible();
  await page.keyboard.type(tb.mcp_url);
  await probeShows(page, "open");
  await w.shot(page, "keyboard-probe-open");
  await page.keyboard.press("Enter");
  try {
    await page.waitForSelector('#cards article.card[data-state="ready"]', { timeout: 8000 });
  } catch {
    const focused = await page.evaluate(() => document.activeElement?.id);
    throw new Error(`Enter in the add form (focus on #${focused}) after an "open" probe added nothing`);
  }
  await page.waitForFunction(() => !document.querySelector("#add-dialog").open);
  check(focusSeen, "no focused element ever showed a focus ring");
  check((await w.list()).length === 1, "keyway list does not have the server");
});

scenario("token-only-enter-focuses-token", async (w) => {
  const tb = await w.testbed("--no-dcr", "--no-device");
  const ui = await w.ui();
  const { page } = await w.open(ui);
  await typeUrl(page, tb.mcp_url, "token-only");
  await page.focus("#add-url");
  await page.keyboard.press("Enter");
  try {
    await page.waitForFunction(() => document.activeElement?.id === "add-token", null, { timeout: 3000 });
  } catch {
    throw new Error("Enter in #add-url after a token-only probe did not move the focus to the token field");
  }
});

scenario("refusals", async (w) => {
  const tb = await w.testbed("--open");
  await w.cli("add", tb.mcp_url, "--name", "target");
  const ui = await w.ui();
  const { ctx, page } = await w.open(ui);
  await page.waitForSelector(`${card("target")}[data-state="ready"]`);
  const id = await page.getAttribute(card("target"), "data-id");

  // The one-time link, a second time, in a fresh browser.
  const other = await w.context();
  const p2 = await other.newPage();
  const again = await p2.goto(ui.login);
  check(again.status() === 403, `the login link worked twice (HTTP ${again.status()})`);
  check((await p2.textContent("h1")).includes("This link does not work"), "the 403 page does not say the link is used");
  await w.shot(p2, "refused-login-again");
  const direct = await p2.goto(`${ui.origin}/`);
  check(direct.status() === 403, `the page without a session answered ${direct.status()}`);

  // Another origin (127.0.0.1, another port: same site, so even the SameSite=Strict
  // cookie goes along) tries to change things, in the browser that holds the session.
  const body = new URLSearchParams({ url: tb.mcp_url, name: "evil", authorize: "0" }).toString();
  const evil = await w.serve((req, res) => {
    res.setHeader("content-type", "text/html; charset=utf-8");
    if (req.url === "/form") {
      res.end(`<!doctype html><form id="f" method="post" action="${ui.origin}/servers/${id}/disable?csrf=guess"></form>
        <script>document.getElementById("f").submit()</script>`);
      return;
    }
    res.end(`<!doctype html><title>evil</title><script>
      window.results = {};
      (async () => {
        const ui = ${JSON.stringify(ui.origin)};
        const body = ${JSON.stringify(body)};
        const tries = {
          simple: () => fetch(ui + "/servers/${id}/disable", { method: "POST", credentials: "include", body: new URLSearchParams() }),
          nocors: () => fetch(ui + "/servers/${id}/disable", { method: "POST", mode: "no-cors", credentials: "include" }),
          add: () => fetch(ui + "/add", { method: "POST", mode: "no-cors", credentials: "include", headers: { "content-type": "application/x-www-form-urlencoded" }, body }),
          preflighted: () => fetch(ui + "/add", { method: "POST", credentials: "include", headers: { "X-CSRF-Token": "guess", Accept: "application/json" }, body: new URLSearchParams(body) }),
          read: () => fetch(ui + "/cards", { credentials: "include" }).then((r) => r.text()),
        };
        for (const [k, f] of Object.entries(tries)) {
          try {
            const r = await f();
            results[k] = typeof r === "string" ? "read: " + r.slice(0, 80) : r.type + " " + r.status;
          } catch (e) {
            results[k] = "error " + e.name;
          }
        }
        results.done = true;
      })();
    </script>`);
  });
  const attacker = await ctx.newPage();
  const seen = [];
  attacker.on("response", (r) => {
    if (r.url().startsWith(ui.origin)) seen.push(`${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`);
  });
  await attacker.goto(`${evil}/`);
  const results = await (await attacker.waitForFunction(() => window.results.done && window.results)).jsonValue();
  // Readable answers would be "basic 200"/"cors 200"; a refused one is a network
  // error (no CORS) or opaque (no-cors, status hidden).
  for (const k of ["simple", "preflighted", "read"]) {
    check(results[k].startsWith("error"), `${k}: the other origin got an answer: ${results[k]}`);
  }
  for (const k of ["nocors", "add"]) {
    check(/^(error|opaque 0)/.test(results[k]), `${k}: ${results[k]}`);
  }
  const notRefused = seen.filter((s) => !s.endsWith(" 403"));
  check(notRefused.length === 0, `answers to the other origin that were not 403: ${notRefused.join(", ")}`);
  check(seen.length >= 2, `the browser sent too few requests to the UI to prove anything: ${seen.join(", ")}`);

  // A form posted from the other origin (a top-level navigation).
  const nav = attacker.waitForResponse((r) => r.url().startsWith(`${ui.origin}/servers/`));
  await attacker.goto(`${evil}/form`);
  const formAnswer = await nav;
  check(formAnswer.status() === 403, `a cross-origin form post answered ${formAnswer.status()}`);
  await attacker.waitForLoadState();
  await w.shot(attacker, "refused-cross-origin-form");

  // Another user of this machine holding the session cookie itself (cookies on
  // 127.0.0.1 are not kept apart by port): refused by who owns the connection. Needs
  // root to act as another user (CI runs as root); skipped, and said so, otherwise.
  const session = (await ctx.cookies(ui.origin)).find((c) => c.name.startsWith("keyway_ui_"));
  check(session, "the session cookie is not in the browser");
  const asNobody = await new Promise((resolve) => {
    if (process.getuid?.() !== 0) return resolve("skipped: not root");
    const script = `fetch(${JSON.stringify(`${ui.origin}/cards`)}, { headers: { cookie: ${JSON.stringify(`${session.name}=${session.value}`)} } })
      .then((r) => console.log(r.status), (e) => console.log("error " + e.message))`;
    execFile("runuser", ["-u", "nobody", "--", "node", "-e", script], { timeout: 20_000 }, (e, stdout) =>
      resolve(e ? `skipped: ${e.message.split("\n")[0]}` : stdout.trim()),
    );
  });
  if (asNobody.startsWith("skipped")) console.log(`  # another-user check ${asNobody}`);
  else check(asNobody === "403", `another user with the session cookie got ${asNobody}`);

  const listed = await w.list();
  check(listed.length === 1 && listed[0].name === "target" && listed[0].enabled, `the store changed: ${JSON.stringify(listed)}`);
  check((await page.getAttribute(card("target"), "data-state")) === "ready", "the card changed");
});

scenario("no-javascript", async (w) => {
  const tb = await w.testbed("--open");
  const oauth = await w.testbed();
  await w.cli("add", tb.mcp_url, "--name", "alpha");
  await w.cli("add", tb.mcp_url, "--name", "bravo");
  await w.cli("add", oauth.mcp_url, "--name", "charlie", "--no-authorize");
  await w.cli("disable", "bravo");
  const ui = await w.ui();
  const { page } = await w.open(ui, { javaScriptEnabled: false });
  const cards = await page.$$eval("#cards article.card", (cs) =>
    cs.map((c) => ({
      name: c.dataset.name,
      state: c.dataset.state,
      title: c.querySelector("h2").textContent,
      badge: c.querySelector(".badge").textContent,
      visible: c.getBoundingClientRect().height > 0,
    })),
  );
  const by = Object.fromEntries(cards.map((c) => [c.name, c]));
  check(cards.length === 3, `${cards.length} cards without JavaScript`);
  check(by.alpha?.state === "ready" && by.alpha.badge === "Ready" && by.alpha.title === "alpha", `alpha: ${JSON.stringify(by.alpha)}`);
  check(by.bravo?.state === "disabled" && by.bravo.badge === "Disabled", `bravo: ${JSON.stringify(by.bravo)}`);
  check(by.charlie?.state === "needs-auth" && by.charlie.badge === "Needs authorization", `charlie: ${JSON.stringify(by.charlie)}`);
  check(cards.every((c) => c.visible), "a card is not visible");
  check(await page.isVisible("noscript p, main .hint").catch(() => false), "no hint that the page is read-only without JavaScript");
  await w.shot(page, "no-javascript", { fullPage: true });
  // The buttons work as plain forms: Disable alpha (CSRF token in the query).
  const [posted] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url().includes("/disable")),
    page.click(`${card("alpha")} .act-disable`),
  ]);
  if (posted.status() >= 400) {
    const origin = await posted.request().headerValue("origin");
    throw new Error(`Disable posted without JavaScript was refused: HTTP ${posted.status()} "${(await posted.text()).trim()}" (the browser sent Origin: ${origin})`);
  }
  await page.waitForURL(`${ui.origin}/`);
  await page.waitForSelector(`${card("alpha")}[data-state="disabled"]`);
  check((await w.list()).find((s) => s.name === "alpha").enabled === false, "keyway list: alpha still enabled");
});

scenario("looks-light-dark-zoom", async (w) => {
  const open = await w.testbed("--open");
  const oauth = await w.testbed();
  const token = await w.testbed("--no-dcr", "--no-device");
  await w.cli("add", open.mcp_url, "--name", "docs");
  await w.cli("add", oauth.mcp_url, "--name", "calendar", "--no-authorize");
  await w.cli("add", token.mcp_url, "--name", "billing-with-a-rather-long-name", "--no-authorize");
  await w.cli("add", open.mcp_url, "--name", "archive");
  await w.cli("disable", "archive");
  const count = 4;

  const light = await w.open(await w.ui(), { colorScheme: "light" });
  await light.page.waitForSelector(card("archive"));
  await w.shot(light.page, "cards-light", { fullPage: true });
  const lightBg = await light.page.evaluate(() => getComputedStyle(document.body).backgroundColor);

  const dark = await w.open(await w.ui(), { colorScheme: "dark" });
  await dark.page.waitForSelector(card("archive"));
  await w.shot(dark.page, "cards-dark", { fullPage: true });
  const darkBg = await dark.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  check(lightBg !== darkBg, `dark mode has the light background (${darkBg})`);
  check(darkBg === "rgb(15, 18, 23)", `dark background is ${darkBg}`);

  // 200% zoom of a 1280 px wide window: 640 CSS px at device scale 2.
  const zoom = await w.open(await w.ui(), { viewport: { width: 640, height: 800 }, deviceScaleFactor: 2 });
  await zoom.page.waitForSelector(card("archive"));
  await w.shot(zoom.page, "cards-zoom-200", { fullPage: true });
  const layout = await zoom.page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: document.documentElement.clientWidth,
    lefts: [...document.querySelectorAll("#cards article.card")].map((c) => Math.round(c.getBoundingClientRect().left)),
    overflowing: [...document.querySelectorAll("#cards article.card *")]
      .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
      .map((e) => e.tagName + "." + e.className)
      .slice(0, 5),
  }));
  check(layout.lefts.length === count, `${layout.lefts.length} cards at 200%`);
  check(new Set(layout.lefts).size === 1, `cards are not in one column at 200%: lefts ${layout.lefts}`);
  check(layout.scroll <= layout.width, `the page scrolls sideways at 200% (${layout.scroll} > ${layout.width})`);
  check(layout.overflowing.length === 0, `elements overflow at 200%: ${layout.overflowing}`);

  // And the add dialog at 200%, with a probe result.
  await typeUrl(zoom.page, oauth.mcp_url, "oauth");
  await w.shot(zoom.page, "add-dialog-zoom-200");
  const dlg = await zoom.page.$eval("#add-dialog", (d) => {
    const r = d.getBoundingClientRect();
    return { left: r.left, right: r.right, width: document.documentElement.clientWidth };
  });
  check(dlg.left >= 0 && dlg.right <= dlg.width, `the add dialog does not fit at 200%: ${JSON.stringify(dlg)}`);
});

// ---- the harness ---------------------------------------------------------------------

async function runOne(browser, s) {
  const w = new World(s.name, browser);
  let timer;
  try {
    await Promise.race([
      s.fn(w),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${SCENARIO_TIMEOUT_MS / 1000} s`)), SCENARIO_TIMEOUT_MS);
      }),
    ]);
    if (w.pageErrors.length) throw new Error(`uncaught errors in the page: ${w.pageErrors.join("; ")}`);
    return null;
  } catch (e) {
    // Keep a picture of where it stood.
    for (const [i, c] of w.contexts.entries()) {
      for (const [j, p] of c.pages().entries()) {
        await p.screenshot({ path: path.join(SHOTS, `FAILED-${s.name}-${i}-${j}.png`), timeout: 5000 }).catch(() => {});
      }
    }
    if (process.env.UI_VERBOSE) for (const l of w.logs) console.error(l());
    return (e && e.message ? e.message : String(e)).split("\n")[0];
  } finally {
    clearTimeout(timer);
    await w.cleanup();
  }
}

async function main() {
  const filter = process.argv.slice(2);
  const chosen = scenarios.filter((s) => !filter.length || filter.some((f) => s.name.includes(f)));
  if (!chosen.length) {
    console.error(`ui-browser: no scenario matches ${filter.join(" ")}`);
    process.exit(2);
  }
  const started = Date.now();
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  let passed = 0;
  try {
    for (const s of chosen) {
      const t0 = Date.now();
      const failure = await runOne(browser, s);
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      if (failure === null) {
        passed += 1;
        console.log(`ok - ${s.name} (${secs} s)`);
      } else {
        console.log(`not ok - ${s.name}: ${failure} (${secs} s)`);
      }
    }
  } finally {
    await browser.close().catch(() => {});
  }
  const total = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`ui-browser: ${passed}/${chosen.length} scenarios passed in ${total} s (screenshots in ${path.relative(ROOT, SHOTS)}/)`);
  process.exit(passed === chosen.length ? 0 : 1);
}

main().catch((e) => {
  console.error(`ui-browser: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
