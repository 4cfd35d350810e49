// Access tokens that live 4 seconds: the client refreshes before they lapse, its socket
// (closed by the server with 4001 at expiry) comes back with a fresh token, and a
// request the server answers 401 is refreshed and retried, all without a sign-in form.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { CourierServer, PASSWORD, conversationButton, launchBrowser, message, openUser, registerInUi } from "./support.js";

const TOKEN_LIFETIME_S = 4;
const server = new CourierServer({ access_token_ttl_s: TOKEN_LIFETIME_S });
let browser;
let dan;
let eve;
let direct;

const danName = `dan${Date.now() % 100000}`;

before(async () => {
  await server.start();
  browser = await launchBrowser();
  dan = await openUser(browser, server);
});

after(async () => {
  await browser?.close();
  await server.dispose();
});

/** A token of eve's that is fresh now: hers lapse as fast as dan's. */
async function eveToken() {
  const reply = await server.rest("POST", "/auth/login", null, { username: eve.username, password: PASSWORD });
  return reply.accessToken;
}

async function until(condition, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting: ${what}`);
    await sleep(100);
  }
}

async function eveSays(body) {
  await server.rest("POST", `/conversations/${direct.id}/messages`, await eveToken(), { clientMsgId: body, body });
}

test("messages keep arriving across several token lifetimes", async () => {
  const refreshes = [];
  dan.page.on("response", (response) => {
    if (response.url().endsWith("/api/v1/auth/refresh")) refreshes.push(response.status());
  });
  await registerInUi(dan, danName);
  eve = await server.registerByApi(`eve${Date.now() % 100000}`);
  const danUser = (await server.rest("GET", `/users?query=${danName}`, eve.token))[0];
  direct = await server.rest("POST", "/conversations", eve.token, { kind: "direct", peerId: danUser.id });
  await eveSays("before expiry");
  await conversationButton(dan.page, eve.username).click();
  await message(dan.page, "before expiry").waitFor();

  // Each lapse closes the socket (4001) up to a second late; the client refreshes its
  // token when it reconnects or makes a request, so the refreshes are waited for, not timed.
  for (const lifetime of [1, 2]) {
    await until(() => refreshes.length >= lifetime, TOKEN_LIFETIME_S * 3000, `refresh ${lifetime}: ${refreshes.length} seen`);
    await eveSays(`after lifetime ${lifetime}`);
    await message(dan.page, `after lifetime ${lifetime}`).waitFor();
  }
  await dan.page.getByLabel("Find people by username").fill("eve");
  await dan.page.getByRole("button", { name: new RegExp(`@${eve.username}`) }).waitFor();
  assert.ok(refreshes.every((status) => status === 200), `refresh answers: ${refreshes}`);
  assert.equal(await dan.page.locator("#auth").isVisible(), false);
  dan.assertClean();
});

test("a request answered 401 is refreshed and retried once", async () => {
  await dan.page.close();
  // Past the token's lifetime, with the stored session claiming it is still good. A token
  // counts in whole seconds, so one the page refreshed just before it closed may be good
  // for up to a second more.
  await sleep((TOKEN_LIFETIME_S + 1) * 1000 + 500);
  await dan.context.addInitScript(() => {
    const session = JSON.parse(localStorage.getItem("courier.session"));
    if (session && !sessionStorage.getItem("stale-once")) {
      sessionStorage.setItem("stale-once", "1");
      session.refreshAt = session.expiresAt = Date.now() + 3600000;
      localStorage.setItem("courier.session", JSON.stringify(session));
    }
  });
  dan.tolerate(/Failed to load resource: the server responded with a status of 401/);
  const answers = [];
  const context = dan.context;
  context.on("response", (response) => {
    const path = new URL(response.url()).pathname;
    if (path === "/api/v1/users/me" || path === "/api/v1/auth/refresh") answers.push(`${path} ${response.status()}`);
  });
  const page = await dan.newPage();
  await page.locator("#app").waitFor({ state: "visible" });
  await conversationButton(page, eve.username).waitFor();
  assert.deepEqual(answers.slice(0, 3), ["/api/v1/users/me 401", "/api/v1/auth/refresh 200", "/api/v1/users/me 200"]);
  assert.ok(dan.seen.some((text) => /status of 401/.test(text)), "the 401 did happen");

  await conversationButton(page, eve.username).click();
  await eveSays("after the retry");
  await message(page, "after the retry").waitFor();
  dan.tolerated.length = 0;
  dan.assertClean();
});
