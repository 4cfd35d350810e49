// A reference chat server: socket.io 4.8 for real-time traffic, PostgreSQL through `pg`
// for storage, and one INSERT (one commit) per message. It serves the subset of the
// courier contract that the load generator uses; README.md describes it.

import { randomBytes, scrypt as scryptCallback } from "node:crypto";
import http from "node:http";
import { promisify } from "node:util";

import pg from "pg";
import { Server } from "socket.io";

const scrypt = promisify(scryptCallback);

const PORT = Number.parseInt(process.env.PORT ?? "3000", 10);
const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const PG_POOL_SIZE = Number.parseInt(process.env.PG_POOL_SIZE ?? "10", 10);
const HOST = "127.0.0.1";

/** Largest REST request body read, in bytes. */
const MAX_BODY_BYTES = 1024 * 1024;
/** Most members a group may name when it is created. */
const MAX_MEMBERS_AT_CREATION = 1000;

// BIGINT (OID 20) columns arrive as strings by default; every id and seq here fits in a
// JavaScript number, and the contract sends them as JSON numbers.
pg.types.setTypeParser(20, (value) => Number.parseInt(value, 10));

const pool = new pg.Pool({ connectionString: DATABASE_URL, max: PG_POOL_SIZE });
pool.on("error", (err) => {
  console.error("idle database client failed:", err.message);
});

/** Access token -> user id. Tokens live as long as the process. */
const tokens = new Map();

// ---------------------------------------------------------------------------------------
// Schema

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS ref_users (
     id bigserial PRIMARY KEY,
     username text NOT NULL UNIQUE,
     password_hash text NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS ref_conversations (
     id bigserial PRIMARY KEY,
     kind text NOT NULL,
     title text,
     last_seq bigint NOT NULL DEFAULT 0
   )`,
  `CREATE TABLE IF NOT EXISTS ref_members (
     conversation_id bigint NOT NULL,
     user_id bigint NOT NULL,
     PRIMARY KEY (conversation_id, user_id)
   )`,
  `CREATE INDEX IF NOT EXISTS ref_members_user_id ON ref_members (user_id)`,
  `CREATE TABLE IF NOT EXISTS ref_messages (
     id bigserial PRIMARY KEY,
     conversation_id bigint NOT NULL,
     seq bigint NOT NULL,
     sender_id bigint NOT NULL,
     client_msg_id text,
     body text NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now(),
     UNIQUE (conversation_id, seq)
   )`,
];

/** Creates the tables; two servers starting at once take turns on an advisory lock. */
async function migrate() {
  const client = await pool.connect();
  try {
    await client.query("SELECT pg_advisory_lock(hashtext('courier-compare-reference'))");
    try {
      for (const statement of SCHEMA) {
        await client.query(statement);
      }
    } finally {
      await client.query("SELECT pg_advisory_unlock(hashtext('courier-compare-reference'))");
    }
  } finally {
    client.release();
  }
}

// ---------------------------------------------------------------------------------------
// Passwords

async function hashPassword(password) {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, 64);
  return `scrypt$${salt.toString("hex")}$${key.toString("hex")}`;
}

// ---------------------------------------------------------------------------------------
// REST helpers

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const badRequest = (message) => new ApiError(400, "bad_request", message);
const invalid = (message) => new ApiError(400, "validation_failed", message);
const unauthorized = (message) => new ApiError(401, "unauthorized", message);
const notFound = (message) => new ApiError(404, "not_found", message);
const conflict = (message) => new ApiError(409, "conflict", message);

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

function sendError(res, err) {
  if (err instanceof ApiError) {
    if (err.status === 405 && err.allow) res.setHeader("allow", err.allow);
    sendJson(res, err.status, { error: err.code, message: err.message });
    return;
  }
  console.error("request failed:", err);
  sendJson(res, 500, { error: "internal", message: "internal error" });
}

/** Reads and parses a JSON request body (an empty body reads as `{}`). */
function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        tooLarge = true;
        chunks.length = 0;
      } else if (!tooLarge) {
        chunks.push(chunk);
      }
    });
    req.on("end", () => {
      if (tooLarge) {
        reject(new ApiError(413, "payload_too_large", "the body is too large"));
        return;
      }
      const text = Buffer.concat(chunks).toString("utf8");
      if (text.trim() === "") {
        resolve({});
        return;
      }
      try {
        resolve(JSON.parse(text));
      } catch {
        reject(badRequest("the body is not valid JSON"));
      }
    });
    req.on("error", reject);
  });
}

function requireObject(body) {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw badRequest("the body must be a JSON object");
  }
  return body;
}

/** The user id behind the request's bearer token. */
function authenticate(req) {
  const header = req.headers.authorization ?? "";
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) throw unauthorized("a bearer token is required");
  const userId = tokens.get(match[1]);
  if (userId === undefined) throw unauthorized("invalid token");
  return userId;
}

const isId = (value) => Number.isSafeInteger(value) && value > 0;

/** Runs `work(client)` inside BEGIN/COMMIT, rolling back if it throws. */
async function transaction(work) {
  const client = await pool.connect();
  try {
    await client.query("BEGIN");
    const result = await work(client);
    await client.query("COMMIT");
    return result;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

// ---------------------------------------------------------------------------------------
// REST routes

async function register(req, res) {
  const body = requireObject(await readJson(req));
  const { username, password } = body;
  if (typeof username !== "string" || username.length < 1 || username.length > 64) {
    throw invalid("username must be a string of 1 to 64 characters");
  }
  if (typeof password !== "string" || password.length < 8 || password.length > 256) {
    throw invalid("password must be a string of 8 to 256 characters");
  }
  const passwordHash = await hashPassword(password);
  let user;
  try {
    const result = await pool.query(
      "INSERT INTO ref_users (username, password_hash) VALUES ($1, $2) RETURNING id, username",
      [username, passwordHash],
    );
    user = result.rows[0];
  } catch (err) {
    if (err.code === "23505") throw conflict("the username is taken");
    throw err;
  }
  const accessToken = randomBytes(32).toString("hex");
  tokens.set(accessToken, user.id);
  sendJson(res, 201, { user: { id: user.id, username: user.username }, accessToken });
}

/** Makes the connected sockets of `userIds` join the conversation's room. */
function joinLive(conversationId, userIds) {
  if (userIds.length === 0) return;
  io.in(userIds.map((id) => `u:${id}`)).socketsJoin(`c:${conversationId}`);
}

async function createConversation(req, res) {
  const userId = authenticate(req);
  const body = requireObject(await readJson(req));
  if (body.kind === "group") {
    await createGroup(res, userId, body);
  } else if (body.kind === "direct") {
    await createDirect(res, userId, body);
  } else {
    throw invalid('kind must be "group" or "direct"');
  }
}

async function createGroup(res, userId, body) {
  const title = body.title ?? null;
  if (title !== null && (typeof title !== "string" || title.length > 200)) {
    throw invalid("title must be a string of at most 200 characters");
  }
  const memberIds = body.memberIds ?? [];
  if (!Array.isArray(memberIds) || !memberIds.every(isId)) {
    throw invalid("memberIds must be an array of user ids");
  }
  if (memberIds.length > MAX_MEMBERS_AT_CREATION) {
    throw invalid(`memberIds may name at most ${MAX_MEMBERS_AT_CREATION} users`);
  }
  const members = [...new Set([userId, ...memberIds])];
  const id = await transaction(async (client) => {
    const found = await client.query(
      "SELECT count(*)::int AS n FROM ref_users WHERE id = ANY($1::bigint[])",
      [members],
    );
    if (found.rows[0].n !== members.length) throw notFound("a member is not a known user");
    const created = await client.query(
      "INSERT INTO ref_conversations (kind, title) VALUES ('group', $1) RETURNING id",
      [title],
    );
    const conversationId = created.rows[0].id;
    await client.query(
      `INSERT INTO ref_members (conversation_id, user_id)
       SELECT $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING`,
      [conversationId, members],
    );
    return conversationId;
  });
  joinLive(id, members);
  sendJson(res, 201, { id, kind: "group", title, memberIds: members });
}

async function createDirect(res, userId, body) {
  const { peerId } = body;
  if (!isId(peerId)) throw invalid("peerId must be a user id");
  if (peerId === userId) throw invalid("a direct conversation needs another user");
  const [low, high] = userId < peerId ? [userId, peerId] : [peerId, userId];
  const { id, created } = await transaction(async (client) => {
    // Two requests for the same pair take turns, so the pair gets one conversation.
    await client.query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", [
      `ref-direct:${low}:${high}`,
    ]);
    const peer = await client.query("SELECT 1 FROM ref_users WHERE id = $1", [peerId]);
    if (peer.rowCount === 0) throw notFound("no such user");
    const existing = await client.query(
      `SELECT c.id FROM ref_conversations c
       JOIN ref_members a ON a.conversation_id = c.id AND a.user_id = $1
       JOIN ref_members b ON b.conversation_id = c.id AND b.user_id = $2
       WHERE c.kind = 'direct'
       LIMIT 1`,
      [low, high],
    );
    if (existing.rowCount > 0) return { id: existing.rows[0].id, created: false };
    const inserted = await client.query(
      "INSERT INTO ref_conversations (kind) VALUES ('direct') RETURNING id",
    );
    const conversationId = inserted.rows[0].id;
    await client.query(
      "INSERT INTO ref_members (conversation_id, user_id) VALUES ($1, $2), ($1, $3)",
      [conversationId, low, high],
    );
    return { id: conversationId, created: true };
  });
  if (created) joinLive(id, [low, high]);
  sendJson(res, created ? 201 : 200, { id, kind: "direct", memberIds: [userId, peerId] });
}

async function addMember(req, res, conversationId) {
  const callerId = authenticate(req);
  const body = requireObject(await readJson(req));
  const { userId } = body;
  if (!isId(userId)) throw invalid("userId must be a user id");
  const conversation = await pool.query(
    `SELECT c.kind FROM ref_conversations c
     JOIN ref_members m ON m.conversation_id = c.id AND m.user_id = $2
     WHERE c.id = $1`,
    [conversationId, callerId],
  );
  if (conversation.rowCount === 0) throw notFound("no such conversation");
  if (conversation.rows[0].kind !== "group") {
    throw invalid("members can only be added to a group");
  }
  const added = await pool.query(
    `INSERT INTO ref_members (conversation_id, user_id)
     SELECT $1, id FROM ref_users WHERE id = $2
     ON CONFLICT DO NOTHING
     RETURNING user_id`,
    [conversationId, userId],
  );
  if (added.rowCount === 0) {
    const user = await pool.query("SELECT 1 FROM ref_users WHERE id = $1", [userId]);
    if (user.rowCount === 0) throw notFound("no such user");
  }
  joinLive(conversationId, [userId]);
  sendJson(res, 201, { conversationId, userId });
}

const MEMBERS_PATH = /^\/api\/v1\/conversations\/([0-9]{1,15})\/members$/;

async function route(req, res) {
  const { pathname } = new URL(req.url ?? "/", "http://localhost");
  const only = (method) => {
    if (req.method !== method) {
      const err = new ApiError(405, "method_not_allowed", `use ${method}`);
      err.allow = method;
      throw err;
    }
  };
  if (pathname === "/api/v1/auth/register") {
    only("POST");
    return register(req, res);
  }
  if (pathname === "/api/v1/conversations") {
    only("POST");
    return createConversation(req, res);
  }
  const members = MEMBERS_PATH.exec(pathname);
  if (members) {
    only("POST");
    return addMember(req, res, Number.parseInt(members[1], 10));
  }
  throw notFound("no such route");
}

const httpServer = http.createServer((req, res) => {
  route(req, res).catch((err) => {
    // A rejected body must still be drained before the connection can be reused.
    req.resume();
    if (!res.headersSent) sendError(res, err);
    else res.destroy(err);
  });
});

// ---------------------------------------------------------------------------------------
// Socket.IO

const io = new Server(httpServer, { serveClient: false });

// The handshake's `auth: {token}` decides who the socket is; its conversations are loaded
// here too (one query), so the rooms are joined before the client hears CONNECT.
io.use(async (socket, next) => {
  const token = socket.handshake.auth?.token;
  const userId = typeof token === "string" ? tokens.get(token) : undefined;
  if (userId === undefined) {
    next(new Error("invalid token"));
    return;
  }
  try {
    const result = await pool.query(
      "SELECT conversation_id FROM ref_members WHERE user_id = $1",
      [userId],
    );
    socket.data.userId = userId;
    socket.data.conversations = new Set(result.rows.map((row) => row.conversation_id));
    next();
  } catch (err) {
    console.error("loading conversations failed:", err.message);
    next(new Error("internal error"));
  }
});

const INSERT_MESSAGE = `
  WITH s AS (
    UPDATE ref_conversations SET last_seq = last_seq + 1 WHERE id = $1::bigint RETURNING last_seq
  )
  INSERT INTO ref_messages (conversation_id, seq, sender_id, client_msg_id, body)
  SELECT $1::bigint, last_seq, $2::bigint, $3::text, $4::text FROM s
  RETURNING id, seq, created_at`;

io.on("connection", (socket) => {
  const { userId, conversations } = socket.data;
  socket.join([`u:${userId}`, ...[...conversations].map((id) => `c:${id}`)]);

  socket.on("message:send", async (data, callback) => {
    const ack = typeof callback === "function" ? callback : () => {};
    const { conversationId, clientMsgId = null, body } = data ?? {};
    if (!isId(conversationId)) {
      ack({ error: "validation_failed", message: "conversationId must be a conversation id" });
      return;
    }
    if (typeof body !== "string" || body.length === 0) {
      ack({ error: "validation_failed", message: "body must be a non-empty string" });
      return;
    }
    if (clientMsgId !== null && typeof clientMsgId !== "string") {
      ack({ error: "validation_failed", message: "clientMsgId must be a string" });
      return;
    }
    const room = `c:${conversationId}`;
    if (!conversations.has(conversationId) && !socket.rooms.has(room)) {
      ack({ error: "not_found", message: "no such conversation" });
      return;
    }
    let row;
    try {
      const result = await pool.query(INSERT_MESSAGE, [conversationId, userId, clientMsgId, body]);
      row = result.rows[0];
    } catch (err) {
      console.error("storing a message failed:", err.message);
      ack({ error: "internal", message: "the message could not be stored" });
      return;
    }
    if (row === undefined) {
      ack({ error: "not_found", message: "no such conversation" });
      return;
    }
    const message = {
      id: row.id,
      conversationId,
      seq: row.seq,
      senderId: userId,
      clientMsgId,
      body,
      createdAt: row.created_at.toISOString(),
    };
    ack({ message });
    io.to(room).emit("message:received", message);
  });
});

// ---------------------------------------------------------------------------------------
// Start and stop

let stopping = false;

async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`${signal}: shutting down`);
  // Do not hang on a stuck client: leave after a few seconds whatever happens.
  setTimeout(() => process.exit(0), 5000).unref();
  await new Promise((resolve) => {
    io.close(() => resolve());
    httpServer.closeAllConnections();
  });
  await pool.end().catch(() => {});
  process.exit(0);
}

process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));

async function main() {
  await migrate();
  httpServer.on("error", (err) => {
    console.error("server error:", err.message);
    process.exit(1);
  });
  httpServer.listen(PORT, HOST, () => {
    console.log(`listening on ${PORT}`);
  });
}

main().catch((err) => {
  console.error("start-up failed:", err.message);
  process.exit(1);
});
