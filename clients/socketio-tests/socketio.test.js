// The official socket.io-client against a courier server started here: the same events,
// payloads and order as the native WebSocket.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { startCourier } from "../courier-process.mjs";

const WAIT_MS = 5000;

let server;
let dataDir;
let base;

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "courier-sio-"));
  const started = await startCourier({
    dataDir,
    env: { COURIER_PRESENCE_GRACE_MS: "200", RUST_LOG: "info" },
  });
  server = started.child;
  const port = started.port;
  base = `http://127.0.0.1:${port}`;
});

after(() => {
  server?.kill("SIGTERM");
  rmSync(dataDir, { recursive: true, force: true });
});

let userCount = 0;
async function register(prefix) {
  userCount += 1;
  const username = `${prefix}${userCount}`;
  const response = await fetch(`${base}/api/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password: "correct horse battery" }),
  });
  assert.equal(response.status, 201);
  const body = await response.json();
  return { id: body.user.id, token: body.accessToken };
}

async function group(owner, members) {
  const response = await fetch(`${base}/api/v1/conversations`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${owner.token}` },
    body: JSON.stringify({ kind: "group", title: "team", memberIds: members.map((m) => m.id) }),
  });
  assert.equal(response.status, 201);
  return (await response.json()).id;
}

const clients = [];
function connect(user, transports = ["websocket"]) {
  const socket = io(base, { transports, auth: { token: user.token }, reconnection: false });
  clients.push(socket);
  return socket;
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function next(socket, event, keep = () => true) {
  return withTimeout(
    new Promise((resolveEvent) => {
      const listener = (data) => {
        if (keep(data)) {
          socket.off(event, listener);
          resolveEvent(data);
        }
      };
      socket.on(event, listener);
    }),
    event,
  );
}

function connected(socket) {
  return withTimeout(
    new Promise((resolveConnect, reject) => {
      socket.once("connect", resolveConnect);
      socket.once("connect_error", reject);
    }),
    "connect",
  );
}

function emit(socket, event, data) {
  return withTimeout(socket.emitWithAck(event, data), `ack of ${event}`);
}

after(() => {
  for (const socket of clients) socket.close();
});

test("connects over websocket, sends with an ack, and the other client receives it", async () => {
  const ann = await register("ann");
  const bob = await register("bob");
  const conversationId = await group(ann, [bob]);
  const annSocket = connect(ann);
  const bobSocket = connect(bob);
  await Promise.all([connected(annSocket), connected(bobSocket)]);

  const received = next(bobSocket, "message:received");
  const reply = await emit(annSocket, "message:send", { conversationId, clientMsgId: "k1", body: "hello" });
  assert.equal(reply.message.body, "hello");
  assert.equal(reply.message.seq, 1);
  assert.deepEqual(await received, reply.message, "the pushed data is the message object itself");

  const retry = await emit(annSocket, "message:send", { conversationId, clientMsgId: "k1", body: "hello" });
  assert.deepEqual(retry.message, reply.message, "a retry answers the first result");
});

test("a missing or bad token gives connect_error with a clear message", async () => {
  const bad = io(base, { transports: ["websocket"], auth: { token: "forged" }, reconnection: false });
  clients.push(bad);
  const error = await withTimeout(new Promise((resolveError) => bad.once("connect_error", resolveError)), "connect_error");
  assert.match(error.message, /invalid or expired access token/);

  const none = io(base, { transports: ["websocket"], reconnection: false });
  clients.push(none);
  const missing = await withTimeout(new Promise((resolveError) => none.once("connect_error", resolveError)), "connect_error");
  assert.match(missing.message, /missing auth token/);
});

test("typing, receipts and presence reach members", async () => {
  const ann = await register("ann");
  const bob = await register("bob");
  const conversationId = await group(ann, [bob]);
  const bobSocket = connect(bob);
  await connected(bobSocket);
  const online = next(bobSocket, "user:online", (data) => data.userId === ann.id);
  const annSocket = connect(ann);
  await connected(annSocket);
  assert.equal((await online).lastSeen, null);

  const typing = next(bobSocket, "typing:started");
  annSocket.emit("typing:start", { conversationId });
  assert.deepEqual(await typing, { conversationId, userId: ann.id });

  await emit(annSocket, "message:send", { conversationId, clientMsgId: "r1", body: "read me" });
  const read = next(annSocket, "message:read");
  assert.deepEqual(await emit(bobSocket, "message:read", { conversationId, seq: 1 }), {});
  assert.deepEqual(await read, { conversationId, userId: bob.id, seq: 1 });

  const offline = next(bobSocket, "user:offline", (data) => data.userId === ann.id);
  annSocket.close();
  assert.equal(typeof (await offline).lastSeen, "string");
});

test("sync after a reconnect returns exactly what was missed", async () => {
  const ann = await register("ann");
  const bob = await register("bob");
  const conversationId = await group(ann, [bob]);
  const annSocket = connect(ann);
  await connected(annSocket);
  let bobSocket = connect(bob);
  await connected(bobSocket);
  const first = next(bobSocket, "message:received");
  await emit(annSocket, "message:send", { conversationId, clientMsgId: "s1", body: "one" });
  const lastSeq = (await first).seq;
  bobSocket.close();
  for (const n of [2, 3, 4]) {
    await emit(annSocket, "message:send", { conversationId, clientMsgId: `s${n}`, body: `message ${n}` });
  }
  bobSocket = connect(bob);
  await connected(bobSocket);
  const synced = await emit(bobSocket, "sync", { conversationId, afterSeq: lastSeq });
  assert.deepEqual(synced.messages.map((m) => m.seq), [2, 3, 4]);
  assert.equal(synced.hasMore, false);
});

test("a non-member's send and bad input get error acks, and the socket stays", async () => {
  const ann = await register("ann");
  const eve = await register("eve");
  const conversationId = await group(ann, []);
  const eveSocket = connect(eve);
  await connected(eveSocket);
  const refused = await emit(eveSocket, "message:send", { conversationId, clientMsgId: "e1", body: "let me in" });
  assert.equal(refused.error, "not_found");
  assert.equal(typeof refused.message, "string");
  assert.equal((await emit(eveSocket, "message:shout", {})).error, "unknown_type");
  assert.equal((await emit(eveSocket, "message:send", { conversationId: "x" })).error, "validation_failed");
  const ownGroup = await group(eve, []);
  const ok = await emit(eveSocket, "message:send", { conversationId: ownGroup, clientMsgId: "e2", body: "still here" });
  assert.equal(ok.message.body, "still here");
});

test("native WebSocket and Socket.IO clients see the same messages in the same order", async () => {
  const ann = await register("ann");
  const bob = await register("bob");
  const cat = await register("cat");
  const conversationId = await group(ann, [bob, cat]);
  const sio = connect(bob);
  await connected(sio);
  const native = new WebSocket(`${base.replace("http", "ws")}/api/v1/ws`, {
    headers: { authorization: `Bearer ${cat.token}` },
  });
  await withTimeout(new Promise((resolveOpen, reject) => {
    native.once("open", resolveOpen);
    native.once("error", reject);
  }), "native open");

  const count = 20;
  const viaSocketIo = [];
  const viaNative = [];
  const sioDone = new Promise((resolveAll) => {
    sio.on("message:received", (message) => {
      viaSocketIo.push(message);
      if (viaSocketIo.length === count) resolveAll();
    });
  });
  const nativeDone = new Promise((resolveAll) => {
    native.on("message", (raw) => {
      const frame = JSON.parse(raw.toString());
      if (frame.type === "message:received") {
        viaNative.push(frame.data);
        if (viaNative.length === count) resolveAll();
      }
    });
  });
  const sender = connect(ann);
  await connected(sender);
  await Promise.all(
    Array.from({ length: count }, (_, n) =>
      emit(sender, "message:send", { conversationId, clientMsgId: `o${n}`, body: `message ${n}` }),
    ),
  );
  await withTimeout(Promise.all([sioDone, nativeDone]), "all messages on both transports");
  native.close();
  assert.deepEqual(viaSocketIo.map((m) => m.seq), Array.from({ length: count }, (_, n) => n + 1));
  assert.deepEqual(viaNative, viaSocketIo, "same messages, same order, same payloads");
});

test("the default transports: long-polling first, then the upgrade to websocket", async () => {
  const ann = await register("ann");
  const bob = await register("bob");
  const conversationId = await group(ann, [bob]);
  const annSocket = io(base, { auth: { token: ann.token }, reconnection: false });
  clients.push(annSocket);
  const bobSocket = connect(bob, ["polling"]);
  await Promise.all([connected(annSocket), connected(bobSocket)]);
  assert.equal(bobSocket.io.engine.transport.name, "polling");

  const first = next(bobSocket, "message:received");
  const sent = await emit(annSocket, "message:send", { conversationId, clientMsgId: "p1", body: "over polling" });
  assert.deepEqual(await first, sent.message, "a polling client receives pushes");

  if (annSocket.io.engine.transport.name !== "websocket") {
    await withTimeout(new Promise((resolveUpgrade) => annSocket.io.engine.once("upgrade", resolveUpgrade)), "upgrade");
  }
  assert.equal(annSocket.io.engine.transport.name, "websocket");
  const second = next(bobSocket, "message:received");
  const again = await emit(annSocket, "message:send", { conversationId, clientMsgId: "p2", body: "after the upgrade" });
  assert.equal(again.message.seq, 2);
  assert.deepEqual(await second, again.message);

  const reply = next(annSocket, "message:received", (m) => m.clientMsgId === "p3");
  const fromPolling = await emit(bobSocket, "message:send", { conversationId, clientMsgId: "p3", body: "from polling" });
  assert.deepEqual(await reply, fromPolling.message, "an upgraded client receives pushes");
});
