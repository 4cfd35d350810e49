// Shared by the browser tests: a courier server on a fresh SQLite file (restartable on the
// same port and database), Chromium from the system, and pages that fail the test on any
// console error or uncaught page error.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startCourier } from "../courier-process.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
export const SCREENSHOTS = resolve(HERE, "screenshots");
export const PASSWORD = "correct horse battery";

const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
];

/** A courier process over its own data directory; `restart` keeps port and database. */
export class CourierServer {
  constructor(settings = {}) {
    this.dataDir = mkdtempSync(join(tmpdir(), "courier-web-"));
    this.configPath = join(this.dataDir, "courier.toml");
    // Many sign-ins and sends from one address in a short test.
    const toml = { auth_requests_per_minute: 1000, sends_per_second: 200, ...settings };
    writeFileSync(
      this.configPath,
      Object.entries(toml)
        .map(([key, value]) => `${key} = ${JSON.stringify(value)}`)
        .join("\n"),
    );
    this.port = 0;
    this.process = null;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    const started = await startCourier({
      dataDir: this.dataDir,
      port: this.port,
      env: { COURIER_CONFIG: this.configPath, COURIER_PRESENCE_GRACE_MS: "300" },
    });
    this.process = started.child;
    this.exited = started.exited;
    this.port = started.port;
  }

  async stop() {
    if (!this.process) return;
    this.process.kill("SIGTERM");
    await this.exited;
    this.process = null;
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  async dispose() {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** A REST call, for setting up what the browser test is not about. */
  async rest(method, path, token, body) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(`${this.base}/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }

  async registerByApi(username) {
    const reply = await this.rest("POST", "/auth/register", null, { username, password: PASSWORD });
    return { id: reply.user.id, token: reply.accessToken, username };
  }
}

export async function launchBrowser() {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: CHROMIUM_ARGS });
}

/**
 * A user's own browser context and page. Console errors and page errors are collected and
 * checked by `assertClean`; `tolerate(pattern)` admits the browser's own network errors
 * while a test makes them happen on purpose (a server stopped, a token made stale).
 */
export async function openUser(browser, server, { phone = false } = {}) {
  const context = await browser.newContext({
    viewport: phone ? { width: 390, height: 780 } : { width: 1200, height: 760 },
    isMobile: phone,
    hasTouch: phone,
    permissions: ["camera", "microphone"],
  });
  context.setDefaultTimeout(10000);
  const user = { context, page: null, errors: [], tolerated: [], seen: [] };
  user.tolerate = (pattern) => user.tolerated.push(pattern);
  user.assertClean = () => assert.deepEqual(user.errors, [], "console or page errors");
  user.newPage = async () => {
    const page = await context.newPage();
    page.on("console", (message) => {
      if (message.type() !== "error") return;
      const text = message.text();
      user.seen.push(text);
      if (!user.tolerated.some((pattern) => pattern.test(text))) user.errors.push(`console: ${text}`);
    });
    page.on("pageerror", (error) => user.errors.push(`page: ${error.message}`));
    await page.goto(`${server.base}/`);
    user.page = page;
    return page;
  };
  await user.newPage();
  return user;
}

export async function registerInUi(user, username, displayName) {
  const { page } = user;
  await page.getByRole("tab", { name: "Create account" }).click();
  await page.getByLabel("Username", { exact: true }).fill(username);
  if (displayName) await page.getByLabel("Display name").fill(displayName);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.locator("#auth-submit").click();
  await page.locator("#app").waitFor({ state: "visible" });
}

/** The message bodies of the open chat, in order. */
export function bodies(page) {
  return page.locator("#messages .message:not(.pending) .body").allTextContents();
}

export function message(page, text) {
  return page.locator("#messages .message:not(.pending)", { has: page.locator(".body", { hasText: text }) });
}

export async function send(page, text) {
  const input = page.getByLabel("Message", { exact: true });
  await input.fill(text);
  await input.press("Enter");
  // Stored: the pending copy is replaced by the acked message.
  await page.locator("#messages .message:not(.pending)", { has: page.locator(".body", { hasText: text }) }).waitFor();
  await page.locator("#messages .message.pending").waitFor({ state: "detached" });
}

export function conversationButton(page, name) {
  return page.locator("#conversation-list .conversation", { has: page.locator(".conversation-name", { hasText: name }) });
}
