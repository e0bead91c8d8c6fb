// The admin console (/console/) in headless Chromium, against a running server.
//
// A Rust test starts the server on a random port, creates the accounts and runs
// `node --test tests/web/console.test.mjs` with:
//   USER_SERVICE_URL                     the server, e.g. http://127.0.0.1:41234
//   USER_SERVICE_ADMIN_USERNAME/PASSWORD an ACTIVE admin
//   USER_SERVICE_MODERATOR_USERNAME/PASSWORD an ACTIVE moderator
//   USER_SERVICE_ADMIN_TOKEN             an admin bearer token, for "another client"
//   SCREENSHOT_DIR                       an existing folder for a PNG of each page (optional)
//   CHROMIUM                             the browser binary (default /usr/bin/chromium)
//
// The steps share one page and run in order; once one fails the rest are skipped, so the
// first failure is the one to read.
import { test, before, after } from "node:test";
import { createHmac } from "node:crypto";
import assert from "node:assert/strict";
import path from "node:path";
import { chromium } from "playwright-core";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: this test runs against a server the Rust harness starts`);
  return value;
}

const BASE = required("USER_SERVICE_URL").replace(/\/+$/, "");
const CONSOLE_URL = `${BASE}/console/`;
const ADMIN = {
  username: required("USER_SERVICE_ADMIN_USERNAME"),
  password: required("USER_SERVICE_ADMIN_PASSWORD"),
};
const MODERATOR = {
  username: required("USER_SERVICE_MODERATOR_USERNAME"),
  password: required("USER_SERVICE_MODERATOR_PASSWORD"),
};
const ADMIN_TOKEN = required("USER_SERVICE_ADMIN_TOKEN");
const SCREENSHOTS = process.env.SCREENSHOT_DIR;
const TIMEOUT = 5000;
// Signing in, creating a user and setting a password hash a password on the server, which
// takes longer in a debug build.
const SLOW = 15_000;

// Names unique to this run, so a reused database does not trip the steps: letters and digits.
const TAG = Date.now().toString(36).slice(-5) + Math.random().toString(36).slice(2, 5);
const PASSWORD = "console-test-pass-1";

let browser;
let page;
let lastBearer = ""; // the newest access token the console sent
const problems = []; // content security violations and uncaught errors in the page

// --- Another client: Connect JSON over plain fetch ---

async function rpc(method, body, token = ADMIN_TOKEN) {
  const headers = { "Content-Type": "application/json", "Connect-Protocol-Version": "1" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const url = `${BASE}/userservice.${method}`;
  const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
  const text = await response.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // Left null; the text goes into the failure message.
  }
  return { status: response.status, body: json, text };
}

async function ok(method, body, token) {
  const reply = await rpc(method, body, token);
  assert.equal(reply.status, 200, `${method} answered HTTP ${reply.status}: ${reply.text}`);
  return reply.body;
}

async function createUser(username, extra = {}) {
  const reply = await ok("UserService/CreateUser", {
    username,
    email: `${username}@example.com`,
    password: PASSWORD,
    ...extra,
  });
  return reply.user;
}

// --- Looking at the page ---

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `probe` until `accept` takes what it returns; fails saying what was last seen.
async function eventually(what, probe, accept, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const seen = await probe();
    if (accept(seen)) return seen;
    if (Date.now() > deadline) {
      const alert = await text("#alert").catch(() => "");
      assert.fail(
        `${what}: not so within ${timeout} ms; last seen ${JSON.stringify(seen)}` +
          (alert ? `; the console's alert says ${JSON.stringify(alert)}` : ""),
      );
    }
    await sleep(50);
  }
}

const text = async (selector) => ((await page.locator(selector).textContent()) ?? "").trim();
const visible = (selector) => page.locator(selector).isVisible();
const usernames = () => page.$$eval("#users-body tr td:first-child", (tds) => tds.map((td) => td.textContent));

async function expectText(selector, expected, timeout = TIMEOUT) {
  const what = `${selector} should read ${JSON.stringify(expected)}`;
  await eventually(what, () => text(selector), (t) => t === expected, timeout);
}

async function expectContains(selector, part, timeout = TIMEOUT) {
  const what = `${selector} should contain ${JSON.stringify(part)}`;
  await eventually(what, () => text(selector), (t) => t.includes(part), timeout);
}

async function expectVisible(selector, shown = true, timeout = TIMEOUT) {
  const what = `${selector} should be ${shown ? "shown" : "hidden"}`;
  await eventually(what, () => visible(selector), (v) => v === shown, timeout);
}

async function expectRows(expected, timeout = TIMEOUT) {
  const want = JSON.stringify([...expected].sort());
  await eventually(
    `the users table should list exactly ${want}`,
    usernames,
    (names) => JSON.stringify([...names].sort()) === want,
    timeout,
  );
}

const countText = (n) => (n === 1 ? "1 user" : `${n} users`);

// The status the user page shows, by its enum name.
async function expectStatus(status) {
  const shown = () => page.getAttribute("#field-status", "data-value");
  await eventually(`the status should be ${status}`, shown, (value) => value === status);
}

async function storedStatus(userId) {
  return (await ok("UserService/GetUser", { userId })).user.status;
}

async function snap(name) {
  if (SCREENSHOTS) await page.screenshot({ path: path.join(SCREENSHOTS, name), fullPage: true });
}

// --- An authenticator app ---

// RFC 6238 with its defaults (SHA-1, six digits, 30-second steps), as every authenticator app
// computes it: a few lines here rather than a package for the test alone.
function base32Bytes(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const bytes = [];
  for (const char of text.replace(/=+$/, "").toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(char);
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 255);
      bits -= 8;
    }
  }
  return Buffer.from(bytes);
}

function totpCode(secret, atSeconds) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(atSeconds / 30)));
  const mac = createHmac("sha1", base32Bytes(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 15;
  const number = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return String(number).padStart(6, "0");
}

// --- Console actions ---

async function signIn({ username, password }, roleLabel) {
  await page.locator("#login-form").waitFor();
  await page.fill("#username", username);
  await page.fill("#password", password);
  await page.click("#sign-in");
  await expectVisible("#users-view", true, SLOW);
  await expectText("#whoami", username);
  await expectText("#whoami-role", roleLabel);
}

async function search(query) {
  await page.fill("#search", query);
  await page.press("#search", "Enter");
}

// Finds a user in the list by searching, and opens their page with the username link.
async function openFromList(username) {
  await page.click("#nav-users");
  await expectVisible("#users-view");
  await search(username);
  await expectRows([username]);
  await page.getByRole("link", { name: username, exact: true }).click();
  await expectVisible("#user-page");
  await expectText("#field-username", username);
}

async function openById(id, username) {
  await page.evaluate((hash) => {
    location.hash = hash;
  }, `#/users/${encodeURIComponent(id)}`);
  await expectVisible("#user-page");
  await expectText("#field-username", username);
}

// --- The steps ---

let broken = null;

function step(name, body) {
  test(name, { timeout: 60_000 }, async (t) => {
    if (broken) {
      t.skip(`an earlier step failed: ${broken}`);
      return;
    }
    try {
      await body();
    } catch (error) {
      broken = name;
      throw error;
    }
  });
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (message) => {
    if (/Content Security Policy/i.test(message.text())) problems.push(`CSP: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("request", async (request) => {
    const authorization = (await request.allHeaders()).authorization ?? "";
    if (authorization.startsWith("Bearer ")) lastBearer = authorization.slice(7);
  });
});

after(async () => {
  await browser?.close();
});

const known = {}; // users made along the way, by role in the story

step("the console loads, with a content security policy", async () => {
  const response = await page.goto(CONSOLE_URL);
  assert.equal(response.status(), 200, `GET ${CONSOLE_URL} answered HTTP ${response.status()}`);
  const csp = response.headers()["content-security-policy"];
  assert.ok(csp, "the console's HTML came without a Content-Security-Policy header");
  const directives = ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"];
  for (const directive of directives) {
    assert.ok(csp.includes(directive), `the Content-Security-Policy lacks ${directive}: ${csp}`);
  }
  // The other files, with the types a browser insists on (it runs no script served as text).
  const types = { "index.html": "text/html", "app.js": "javascript", "app.css": "text/css", "server.json": "json" };
  for (const [name, type] of Object.entries(types)) {
    const served = await fetch(`${CONSOLE_URL}${name}`);
    assert.equal(served.status, 200, `GET /console/${name} answered HTTP ${served.status}`);
    const contentType = served.headers.get("content-type") ?? "";
    assert.ok(contentType.includes(type), `/console/${name} is served as ${JSON.stringify(contentType)}`);
  }
  await page.locator("#login-form").waitFor();
  const info = await (await fetch(`${CONSOLE_URL}server.json`)).json();
  await expectVisible("#dev-banner", info.developmentKey === true);
  await snap("01-sign-in.png");
});

step("an admin signs in and sees the total count", async () => {
  await signIn(ADMIN, "Admin");
  const total = (await ok("UserService/ListUsers", { pageSize: 1 })).totalCount ?? 0;
  await expectText("#total-count", countText(total));
  const rows = Math.min(total, 20); // the console's page size
  await eventually("the table should show the first page", usernames, (names) => names.length === rows);
  await snap("02-user-list.png");
});

step("search and the role filter narrow the table", async () => {
  known.searchUser = await createUser(`s${TAG}a`);
  known.searchModerator = await createUser(`s${TAG}b`, { role: "USER_ROLE_MODERATOR" });
  await search(`s${TAG}`);
  await expectRows([`s${TAG}a`, `s${TAG}b`]);
  await expectText("#total-count", "2 users");
  await page.selectOption("#role-filter", "USER_ROLE_MODERATOR");
  await expectRows([`s${TAG}b`]);
  await expectText("#total-count", "1 user");
  await page.selectOption("#role-filter", "");
  await search("");
});

step("keyset paging walks a search page by page, and back", async () => {
  const created = [];
  for (let i = 0; i < 23; i++) {
    created.push((await createUser(`p${TAG}${String(i).padStart(2, "0")}`)).username);
  }
  await search(`p${TAG}`);
  await expectText("#total-count", countText(23));
  await eventually("the first page should hold 20 users", usernames, (shown) => shown.length === 20);
  const first = await usernames();
  await page.click("#next-page");
  await eventually(
    "the second page should hold the other 3",
    usernames,
    (shown) => shown.length === 3 && shown.every((name) => !first.includes(name)),
  );
  const second = await usernames();
  assert.deepEqual([...first, ...second].sort(), [...created].sort(), "the two pages hold every user once");
  await page.click("#prev-page");
  await eventually(
    "Previous should show the first page again",
    usernames,
    (shown) => JSON.stringify(shown) === JSON.stringify(first),
  );
  await search("");
});

step("an admin creates a user with the form and lands on their page", async () => {
  await page.click("#create-user");
  await expectVisible("#create-form");
  await snap("05-create-form.png");
  const username = `c${TAG}`;
  await page.fill("#create-username", username);
  await page.fill("#create-email", `${username}@example.com`);
  await page.fill("#create-full-name", "Cleo Created");
  await page.fill("#create-password", PASSWORD);
  await page.selectOption("#create-role", "USER_ROLE_USER");
  await page.click("#create-submit");
  await expectVisible("#user-page", true, SLOW);
  await expectText("#field-username", username);
  await expectText("#field-full-name", "Cleo Created");
  const stored = (await ok("UserService/LookupUser", { username })).user;
  await expectText("#field-id", stored.id);
  const address = page.url();
  assert.ok(address.endsWith(`#/users/${stored.id}`), `the address should name the new user: ${address}`);
  known.created = stored;
});

step("a user another client creates appears in the open list without a reload", async () => {
  await page.click("#nav-users");
  await expectVisible("#users-view");
  await search(`l${TAG}`);
  await expectRows([]);
  await expectText("#total-count", "0 users");
  const live = () => page.getAttribute("#live-status", "data-state");
  await eventually("the live updates stream should be open", live, (state) => state === "open");
  await page.evaluate(() => {
    window.notReloaded = true; // a reload would drop this
  });
  await createUser(`l${TAG}x`);
  await expectRows([`l${TAG}x`], 2000);
  assert.equal(await page.evaluate(() => window.notReloaded), true, "the page was reloaded");
});

step("saving over another client's change reports the conflict and shows their value", async () => {
  known.target = await createUser(`k${TAG}`, { fullName: "Kay Original" });
  await openFromList(`k${TAG}`);
  await expectText("#field-full-name", "Kay Original");
  await page.fill("#edit-full-name", "Mine");
  const theirs = (await ok("UserService/UpdateUser", { userId: known.target.id, fullName: "Theirs" })).user;
  await page.click("#save");
  await expectContains("#alert", "This user was changed by someone else since you opened it. Nothing was saved.");
  const fullName = () => page.inputValue("#edit-full-name");
  await eventually("the form should show the other client's full name", fullName, (v) => v === "Theirs");
  await expectText("#field-full-name", "Theirs");
  await expectText("#field-etag", theirs.etag);
  const stored = (await ok("UserService/GetUser", { userId: known.target.id })).user;
  assert.equal(stored.fullName, "Theirs", "the console overwrote the other client's change");
  await snap("04-conflict.png");

  // Saving again, now on the current etag, goes through.
  await page.fill("#edit-full-name", "Kay Saved");
  await page.fill("#edit-metadata", "team=web");
  await page.click("#save");
  await expectContains("#status", "Saved");
  await expectText("#field-full-name", "Kay Saved");
  const saved = (await ok("UserService/GetUser", { userId: known.target.id })).user;
  assert.equal(saved.fullName, "Kay Saved");
  assert.deepEqual(saved.metadata, { team: "web" });
  await snap("03-user-page.png");
});

step("an admin suspends and reactivates a user", async () => {
  await page.click("#suspend");
  await expectStatus("USER_STATUS_SUSPENDED");
  await expectText("#field-status", "Suspended");
  assert.equal(await storedStatus(known.target.id), "USER_STATUS_SUSPENDED");
  await page.click("#reactivate");
  await expectStatus("USER_STATUS_ACTIVE");
  await expectVisible("#suspend");
  assert.equal(await storedStatus(known.target.id), "USER_STATUS_ACTIVE");
});

step("end sessions says how many ended", async () => {
  const login = await ok("AuthService/Login", { username: `k${TAG}`, password: PASSWORD }, null);
  await page.click("#end-sessions");
  await expectContains("#status", "Ended 1 session");
  const refresh = await rpc("AuthService/Refresh", { refreshToken: login.refreshToken }, null);
  assert.notEqual(refresh.status, 200, "the ended session's refresh token still works");
});

step("an admin sets a user's password", async () => {
  await page.fill("#new-password", "a-new-password-9");
  await page.click("#set-password");
  await expectContains("#status", "Password set", SLOW);
  await ok("AuthService/Login", { username: `k${TAG}`, password: "a-new-password-9" }, null);
});

step("an admin deletes a user after confirming", async () => {
  await openById(known.created.id, known.created.username);
  await page.click("#delete");
  await expectVisible("#confirm-delete");
  await page.click("#confirm-delete");
  await expectVisible("#users-view");
  await expectContains("#status", `Deleted ${known.created.username}`);
  const gone = await rpc("UserService/GetUser", { userId: known.created.id });
  assert.equal(gone.body?.code, "not_found", `the user should be gone, GetUser answered ${gone.text}`);
});

step("signing out ends the session", async () => {
  assert.ok(lastBearer, "the console never sent an access token");
  const token = lastBearer;
  await page.click("#sign-out");
  await expectVisible("#login-form");
  await expectVisible("#session-info", false);
  const refused = await rpc("UserService/ListUsers", { pageSize: 1 }, token);
  assert.equal(refused.body?.code, "unauthenticated", `the signed-out token should be refused: ${refused.text}`);
});

step("a moderator is offered only what a moderator may do", async () => {
  await signIn(MODERATOR, "Moderator");
  await expectVisible("#create-user", false);
  await snap("06-moderator-view.png");

  await openFromList(`k${TAG}`);
  for (const selector of ["#delete", "#set-password", "#edit-form", "#edit-role"]) {
    assert.equal(await visible(selector), false, `a moderator is offered ${selector} on a USER's page`);
  }
  assert.equal(await visible("#end-sessions"), false, "a moderator is offered to end another user's sessions");
  await page.click("#suspend");
  await expectStatus("USER_STATUS_SUSPENDED");
  await page.click("#reactivate");
  await expectStatus("USER_STATUS_ACTIVE");

  const admin = (await ok("UserService/LookupUser", { username: ADMIN.username })).user;
  await openById(admin.id, admin.username);
  for (const selector of ["#suspend", "#reactivate", "#delete", "#set-password", "#edit-form"]) {
    assert.equal(await visible(selector), false, `a moderator is offered ${selector} on an admin's page`);
  }
});

step("a refusal is shown as the server worded it", async () => {
  const me = (await ok("UserService/LookupUser", { username: MODERATOR.username })).user;
  // What the server says to this request, asked directly.
  const refusal = await rpc("UserService/UpdateUser", { userId: me.id, username: "no" });
  assert.equal(refusal.body?.code, "invalid_argument", `expected a refusal, got ${refusal.text}`);
  await page.click("#whoami");
  await expectText("#field-username", MODERATOR.username);
  await expectVisible("#edit-role", false);
  await page.fill("#edit-username", "no");
  await page.click("#save");
  await expectContains("#alert", refusal.body.message);
  const stored = (await ok("UserService/GetUser", { userId: me.id })).user;
  assert.equal(stored.username, MODERATOR.username);
});

step("a moderator turns on a second factor with the QR code, then signs in with a code", async () => {
  await page.click("#whoami");
  await expectVisible("#second-factor");
  await page.fill("#enroll-password", MODERATOR.password);
  await page.click("#enroll-totp");
  await expectVisible("#enrollment");
  const decoded = await page.locator("#totp-qr").evaluate((image) => image.complete && image.naturalWidth > 0);
  assert.ok(decoded, "the QR code image did not load");
  const secret = (await text("#totp-secret")).trim();
  assert.match(secret, /^[A-Z2-7]{32}$/, `the key shown is not base32: ${secret}`);
  const now = Date.now() / 1000;
  await page.fill("#totp-code", totpCode(secret, now));
  await page.click("#confirm-totp");
  await expectVisible("#recovery-box");
  const codes = await page.locator("#recovery-codes li").allTextContents();
  assert.equal(codes.length, 10, `ten recovery codes should be shown: ${JSON.stringify(codes)}`);
  await snap("08-second-factor.png");

  await page.click("#sign-out");
  await page.locator("#login-form").waitFor();
  await page.fill("#username", MODERATOR.username);
  await page.fill("#password", MODERATOR.password);
  await page.click("#sign-in");
  await expectVisible("#second-factor-field", true, SLOW);
  // The confirmation used this step's code, and a code works once: the next step's is valid.
  await page.fill("#second-factor-code", totpCode(secret, now + 30));
  await page.click("#sign-in");
  // Signed in again, back on the page that was open.
  await expectVisible("#session-info", true, SLOW);
  await expectText("#whoami", MODERATOR.username);
  await expectVisible("#second-factor-field", false);
});

step("on a phone-sized screen the list fits the width", async () => {
  await page.setViewportSize({ width: 375, height: 740 });
  await page.click("#nav-users");
  await expectVisible("#users-table");
  await search("");
  await eventually("the table should show users", usernames, (names) => names.length > 0);
  const { wide, screen } = await page.evaluate(() => ({
    wide: document.documentElement.scrollWidth,
    screen: window.innerWidth,
  }));
  assert.ok(wide <= screen, `the page scrolls sideways: ${wide} px wide on a ${screen} px screen`);
  await snap("07-phone-list.png");
});

step("the page broke no content security rule and threw no error", async () => {
  assert.deepEqual(problems, []);
});
