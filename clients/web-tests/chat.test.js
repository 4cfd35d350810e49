// Two people in two browser contexts (one desktop, one phone width) chat through the web
// client served by a courier process started here. The steps run in order and build on
// each other: what users see is asserted in the DOM.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  CourierServer,
  SCREENSHOTS,
  bodies,
  conversationButton,
  launchBrowser,
  message,
  openUser,
  registerInUi,
  send,
} from "./support.js";

const server = new CourierServer();
let browser;
let ann;
let bob;

const annName = `ann${Date.now() % 100000}`;
const bobName = `bob${Date.now() % 100000}`;

before(async () => {
  await server.start();
  browser = await launchBrowser();
  ann = await openUser(browser, server);
  bob = await openUser(browser, server, { phone: true });
});

after(async () => {
  await browser?.close();
  await server.dispose();
});

test("both register and land in the app", async () => {
  await registerInUi(ann, annName, "Ann");
  await registerInUi(bob, bobName, "Bob");
  assert.equal(await ann.page.locator("#me-name").textContent(), "Ann");
  assert.equal(await bob.page.locator("#me-name").textContent(), "Bob");
  await ann.page.locator("#no-conversations").waitFor();
  ann.assertClean();
  bob.assertClean();
});

test("ann finds bob by username, starts a direct chat and sends with Enter", async () => {
  const { page } = ann;
  await page.getByLabel("Find people by username").fill(bobName.slice(0, 4));
  await page.getByRole("button", { name: `Bob (@${bobName})` }).click();
  await page.locator("#chat-name", { hasText: "Bob" }).waitFor();
  await page.locator("#chat-presence", { hasText: "online" }).waitFor();
  await send(page, "Hi Bob");
  await send(page, "Are you there?");
  assert.deepEqual(await bodies(page), ["Hi Bob", "Are you there?"]);

  // Bob's list shows the conversation with its last message, unread count and ann online.
  const row = conversationButton(bob.page, "Ann");
  await row.locator(".badge", { hasText: "2" }).waitFor();
  assert.equal(await row.locator(".conversation-preview").textContent(), "Are you there?");
  await row.locator('.dot[data-online="true"]').waitFor();
  assert.equal(await bob.page.title(), "(2) Courier");
  // Delivered: bob's client has them, though it has not shown them yet.
  await message(page, "Are you there?").locator('.tick[data-state="delivered"]').waitFor();
  ann.assertClean();
  bob.assertClean();
});

test("bob opens it (phone width: one pane), ann's ticks turn to read, typing shows", async () => {
  const { page } = bob;
  assert.equal(await page.locator("#chat").isVisible(), false, "the list alone at phone width");
  await conversationButton(page, "Ann").click();
  await page.locator("#chat-name", { hasText: "Ann" }).waitFor();
  assert.equal(await page.locator(".sidebar").isVisible(), false, "the chat alone at phone width");
  await page.locator("#chat-presence", { hasText: "online" }).waitFor();
  await message(page, "Are you there?").waitFor();
  assert.deepEqual(await bodies(page), ["Hi Bob", "Are you there?"]);
  await message(ann.page, "Are you there?").locator('.tick[data-state="read"]').waitFor();
  await message(ann.page, "Hi Bob").locator('.tick[data-state="read"]').waitFor();
  assert.equal(await conversationButton(page, "Ann").locator(".badge").count(), 0);

  await page.getByLabel("Message", { exact: true }).pressSequentially("Hel", { delay: 30 });
  await ann.page.locator("#typing", { hasText: "Bob is typing…" }).waitFor();
  await page.getByLabel("Message", { exact: true }).pressSequentially("lo Ann", { delay: 10 });
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await message(ann.page, "Hello Ann").waitFor();
  await ann.page.locator("#typing").filter({ hasText: /^$/ }).waitFor();
  await page.screenshot({ path: join(SCREENSHOTS, "chat-phone.png") });
  ann.assertClean();
  bob.assertClean();
});

test("Shift+Enter writes a new line, Escape cancels a reply, a reply quotes its message", async () => {
  const { page } = ann;
  const input = page.getByLabel("Message", { exact: true });
  await message(page, "Hello Ann").hover();
  await message(page, "Hello Ann").getByRole("button", { name: "Reply" }).click();
  await page.locator("#composer-context", { hasText: "Replying to Bob" }).waitFor();
  await input.press("Escape");
  await page.locator("#composer-context").waitFor({ state: "hidden" });

  await message(page, "Hello Ann").hover();
  await message(page, "Hello Ann").getByRole("button", { name: "Reply" }).click();
  await input.pressSequentially("Two lines:");
  await input.press("Shift+Enter");
  await input.pressSequentially("here");
  assert.equal(await input.inputValue(), "Two lines:\nhere");
  await input.press("Enter");
  const reply = message(bob.page, "Two lines:");
  await reply.waitFor();
  assert.equal(await reply.locator(".body").textContent(), "Two lines:\nhere");
  assert.equal(await reply.locator(".quote .quote-text").textContent(), "Hello Ann");
  assert.equal(await reply.locator(".quote .quote-sender").textContent(), "Bob");
  ann.assertClean();
  bob.assertClean();
});

test("ann edits and deletes her own messages; bob sees edited and deleted", async () => {
  const { page } = ann;
  const input = page.getByLabel("Message", { exact: true });
  await message(page, "Hi Bob").hover();
  await message(page, "Hi Bob").getByRole("button", { name: "Edit" }).click();
  assert.equal(await input.inputValue(), "Hi Bob");
  await input.fill("Hi Bob, welcome");
  await input.press("Enter");
  const edited = message(bob.page, "Hi Bob, welcome");
  await edited.locator(".edited", { hasText: "edited" }).waitFor();
  assert.equal(await edited.getAttribute("data-edited"), "true");

  await message(page, "Are you there?").hover();
  await message(page, "Are you there?").getByRole("button", { name: "Delete" }).click();
  const gone = bob.page.locator('#messages .message[data-seq="2"]');
  await gone.locator(".body", { hasText: "This message was deleted" }).waitFor();
  assert.equal(await gone.getAttribute("data-deleted"), "true");
  assert.equal(await message(page, "Hello Ann").getByRole("button", { name: "Edit" }).count(), 0, "only one's own messages can be edited");

  assert.deepEqual(await bodies(bob.page), ["Hi Bob, welcome", "This message was deleted", "Hello Ann", "Two lines:\nhere"]);
  const seqs = await bob.page.locator("#messages .message").evaluateAll((items) => items.map((item) => Number(item.dataset.seq)));
  assert.deepEqual(seqs, [1, 2, 3, 4]);
  await page.screenshot({ path: join(SCREENSHOTS, "chat-desktop.png") });
  ann.assertClean();
  bob.assertClean();
});

let carol;

test("history pages by seq as ann scrolls up", async () => {
  carol = await server.registerByApi(`carol${Date.now() % 100000}`);
  const annUser = (await server.rest("GET", `/users?query=${annName}`, carol.token))[0];
  const direct = await server.rest("POST", "/conversations", carol.token, { kind: "direct", peerId: annUser.id });
  for (let n = 1; n <= 45; n += 1) {
    await server.rest("POST", `/conversations/${direct.id}/messages`, carol.token, { clientMsgId: `carol-${n}`, body: `carol says ${n}` });
  }
  const { page } = ann;
  const row = conversationButton(page, carol.username);
  await row.locator(".badge", { hasText: "45" }).waitFor();
  await row.click();
  await message(page, "carol says 45").waitFor();
  assert.equal(await page.locator('#messages .message[data-seq="15"]').count(), 0, "only the newest page at first");
  const first = await page.locator("#messages .message").first().getAttribute("data-seq");
  assert.equal(first, "16");
  await page.locator("#messages").evaluate((list) => {
    list.scrollTop = 0;
  });
  await page.locator('#messages .message[data-seq="1"]').waitFor();
  const seqs = await page.locator("#messages .message").evaluateAll((items) => items.map((item) => Number(item.dataset.seq)));
  assert.deepEqual(seqs, Array.from({ length: 45 }, (_, i) => i + 1));
  await page.locator(".history-start", { hasText: "Start of the conversation" }).waitFor();
  ann.assertClean();
});

test("ann creates a group with bob; it appears for bob and they talk in it", async () => {
  const { page } = ann;
  await page.getByRole("button", { name: "New group" }).click();
  await page.getByLabel("Group name").fill("Launch crew");
  await page.getByRole("searchbox", { name: "Add people" }).fill(bobName);
  await page.locator("#group-results").getByRole("button", { name: `Bob (@${bobName})` }).click();
  await page.locator("#group-members .chip", { hasText: "Bob" }).waitFor();
  await page.getByRole("button", { name: "Create" }).click();
  await page.locator("#chat-name", { hasText: "Launch crew" }).waitFor();
  await page.locator("#chat-presence", { hasText: "2 members" }).waitFor();
  await send(page, "Welcome to the crew");

  await bob.page.getByRole("button", { name: "Back to conversations" }).click();
  await conversationButton(bob.page, "Launch crew").click();
  await message(bob.page, "Welcome to the crew").waitFor();
  assert.equal(await message(bob.page, "Welcome to the crew").locator(".sender").textContent(), "Ann");

  await page.getByRole("button", { name: "Add people to this group" }).click();
  await page.getByRole("searchbox", { name: "Add people" }).fill(carol.username);
  await page.locator("#group-results").getByRole("button", { name: new RegExp(`@${carol.username}`) }).click();
  await page.getByRole("button", { name: "Add", exact: true }).click();
  await page.locator("#chat-presence", { hasText: "3 members" }).waitFor();
  await bob.page.locator("#chat-presence", { hasText: "3 members" }).waitFor();
  ann.assertClean();
  bob.assertClean();
});

test("presence: bob leaves (ann sees last seen), reloads and is still signed in (online again)", async () => {
  await ann.page.locator("#conversation-list .conversation", { hasText: "Bob" }).first().click();
  await ann.page.locator("#chat-presence", { hasText: "online" }).waitFor();
  await bob.page.close();
  await ann.page.locator("#chat-presence", { hasText: "last seen today" }).waitFor();
  await conversationButton(ann.page, "Bob").locator('.dot[data-online="false"]').waitFor();

  const page = await bob.newPage();
  await page.locator("#app").waitFor({ state: "visible" });
  assert.equal(await page.locator("#auth").isVisible(), false, "no sign-in form after a reload");
  await ann.page.locator("#chat-presence", { hasText: "online" }).waitFor();
  await conversationButton(page, "Ann").click();
  await message(page, "Two lines:").waitFor();
  assert.deepEqual(await bodies(page), ["Hi Bob, welcome", "This message was deleted", "Hello Ann", "Two lines:\nhere"]);

  await page.reload();
  await page.locator("#chat-name", { hasText: "Ann" }).waitFor();
  await message(page, "Two lines:").waitFor();
  ann.assertClean();
  bob.assertClean();
});

test("the server restarts: both reconnect, and a message sent while bob is away arrives once", async () => {
  // The browser reports the refused connections of the restart as console errors, and
  // a request in flight when the server stops as reset.
  for (const user of [ann, bob]) {
    user.tolerate(/WebSocket connection to .* failed/);
    user.tolerate(/Failed to load resource: net::ERR_(CONNECTION_REFUSED|CONNECTION_RESET|INTERNET_DISCONNECTED)/);
  }
  await server.stop();
  await ann.page.locator("#connection", { hasText: "Reconnecting…" }).waitFor();
  await bob.page.locator("#connection", { hasText: "Reconnecting…" }).waitFor();
  // Bob stays away until ann's message is stored.
  await bob.context.setOffline(true);
  await server.start();
  await ann.page.locator("#connection").waitFor({ state: "hidden", timeout: 20000 });
  await send(ann.page, "Sent while you were away");
  await message(ann.page, "Hi Bob, welcome").hover();
  await message(ann.page, "Hi Bob, welcome").getByRole("button", { name: "Edit" }).click();
  await ann.page.getByLabel("Message", { exact: true }).fill("Hi Bob, welcome back");
  await ann.page.getByLabel("Message", { exact: true }).press("Enter");
  await message(ann.page, "Hi Bob, welcome back").waitFor();
  assert.equal(await bob.page.locator("#connection").isVisible(), true, "bob is still reconnecting");

  await bob.context.setOffline(false);
  await bob.page.locator("#connection").waitFor({ state: "hidden", timeout: 20000 });
  await message(bob.page, "Sent while you were away").waitFor();
  await message(bob.page, "Hi Bob, welcome back").locator(".edited").waitFor();
  await send(bob.page, "Back again");
  await message(ann.page, "Back again").waitFor();
  // Nothing twice, nothing missing, in seq order.
  assert.deepEqual(await bodies(bob.page), [
    "Hi Bob, welcome back",
    "This message was deleted",
    "Hello Ann",
    "Two lines:\nhere",
    "Sent while you were away",
    "Back again",
  ]);
  const seqs = await bob.page.locator("#messages .message").evaluateAll((items) => items.map((item) => Number(item.dataset.seq)));
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6]);
  await message(ann.page, "Sent while you were away").locator('.tick[data-state="read"]').waitFor();
  await ann.page.screenshot({ path: join(SCREENSHOTS, "chat-after-restart.png") });
  ann.tolerated.length = 0;
  bob.tolerated.length = 0;
  ann.assertClean();
  bob.assertClean();
});

test("a message written while the socket is down survives a reload and is sent once", async () => {
  const { page } = ann;
  // Ann's WebSockets are refused until `blocked` is cleared; her page still loads.
  let blocked = true;
  await page.routeWebSocket(/\/api\/v1\/ws/, (ws) => {
    if (blocked) ws.close({ code: 1011, reason: "blocked by the test" });
    else ws.connectToServer();
  });
  await page.reload();
  await page.locator("#connection", { hasText: "Reconnecting…" }).waitFor();
  const input = page.getByLabel("Message", { exact: true });
  await input.fill("Written offline");
  await input.press("Enter");
  await page.locator("#messages .message.pending", { hasText: "Written offline" }).waitFor();

  await page.reload();
  await page.locator("#connection", { hasText: "Reconnecting…" }).waitFor();
  await page.locator("#messages .message.pending", { hasText: "Written offline" }).waitFor();
  blocked = false;
  await page.locator("#connection").waitFor({ state: "hidden", timeout: 20000 });
  await message(page, "Written offline").waitFor();
  await page.locator("#messages .message.pending").waitFor({ state: "detached" });
  await message(bob.page, "Written offline").waitFor();
  await page.unrouteAll();
  const count = async (user) => (await bodies(user.page)).filter((body) => body === "Written offline").length;
  assert.equal(await count(ann), 1, "once for ann");
  assert.equal(await count(bob), 1, "once for bob");
  // Sent: a further reload restores nothing.
  await page.reload();
  await message(page, "Written offline").waitFor();
  assert.equal(await page.locator("#messages .message.pending").count(), 0);
  ann.assertClean();
  bob.assertClean();
});

test("a video call between the two reaches connected, then hangs up", async () => {
  const { page } = ann;
  await page.getByRole("button", { name: "Video call" }).click();
  await page.locator("#call-state", { hasText: "Calling…" }).waitFor();
  await bob.page.locator("#call-state", { hasText: "Incoming call" }).waitFor();
  assert.equal(await bob.page.locator("#call-peer").textContent(), "Ann");
  await bob.page.getByRole("button", { name: "Accept" }).click();
  await page.locator("#call-state", { hasText: "Connected" }).waitFor({ timeout: 20000 });
  await bob.page.locator("#call-state", { hasText: "Connected" }).waitFor({ timeout: 20000 });
  await page.screenshot({ path: join(SCREENSHOTS, "call.png") });
  await page.getByRole("button", { name: "Hang up" }).click();
  await bob.page.locator("#call-state", { hasText: "Call ended" }).waitFor();
  await bob.page.locator("#call-dialog").waitFor({ state: "hidden" });
  ann.assertClean();
  bob.assertClean();
});

test("log out returns to the sign-in form, and signing in again restores the chats", async () => {
  const { page } = bob;
  await page.getByRole("button", { name: "Back to conversations" }).click();
  await page.getByRole("button", { name: "Log out" }).click();
  await page.locator("#auth").waitFor({ state: "visible" });
  await page.reload();
  await page.locator("#auth").waitFor({ state: "visible" });
  await page.getByLabel("Username", { exact: true }).fill(bobName);
  await page.getByLabel("Password", { exact: true }).fill("correct horse battery");
  await page.locator("#auth-submit").click();
  await conversationButton(page, "Launch crew").waitFor();
  await page.screenshot({ path: join(SCREENSHOTS, "list-phone.png") });
  ann.assertClean();
  bob.assertClean();
});
