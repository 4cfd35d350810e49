// REST client: keeps the session in localStorage so it survives a reload, refreshes the
// access token before it expires (and once more on a 401), and rotates refresh tokens
// under a lock shared by every tab, since using a spent refresh token revokes the login.

const SESSION_KEY = "courier.session";
// Refresh this long before expiry (a quarter of short lifetimes), so requests and socket
// handshakes never carry a token that lapses on the way.
const EARLY_REFRESH_MAX_MS = 5000;

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `request failed with ${status}`);
    this.status = status;
    this.code = body?.error ?? "unknown";
    this.fields = body?.fields ?? null;
  }
}

function readSession() {
  try {
    return JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null");
  } catch {
    return null;
  }
}

function writeSession(session) {
  if (session) localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else localStorage.removeItem(SESSION_KEY);
}

function sessionFrom(reply) {
  return {
    user: reply.user,
    accessToken: reply.accessToken,
    refreshToken: reply.refreshToken,
    expiresAt: Date.now() + reply.expiresIn * 1000,
    refreshAt: Date.now() + reply.expiresIn * 1000 - Math.min(EARLY_REFRESH_MAX_MS, reply.expiresIn * 250),
  };
}

async function readBody(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { message: text };
  }
}

async function post(path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`/api/v1${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  const reply = await readBody(response);
  if (!response.ok) throw new ApiError(response.status, reply);
  return reply;
}

function withLock(work) {
  if (navigator.locks) return navigator.locks.request("courier.refresh", work);
  return work();
}

export class Api {
  constructor() {
    this.session = readSession();
    this.refreshing = null;
    /** Called when the session ends for good (logout, revoked or expired refresh token). */
    this.onSignedOut = () => {};
    window.addEventListener("storage", (event) => {
      if (event.key !== SESSION_KEY) return;
      this.session = readSession();
      if (!this.session) this.onSignedOut();
    });
  }

  get user() {
    return this.session?.user ?? null;
  }

  get signedIn() {
    return Boolean(this.session?.refreshToken);
  }

  async register(username, password, displayName) {
    const body = { username, password };
    if (displayName) body.displayName = displayName;
    this.adopt(await post("/auth/register", body));
  }

  async login(username, password) {
    this.adopt(await post("/auth/login", { username, password }));
  }

  async logout() {
    const refreshToken = this.session?.refreshToken;
    this.session = null;
    writeSession(null);
    if (refreshToken) {
      try {
        await post("/auth/logout", { refreshToken });
      } catch {
        // The local session is gone either way; the token lapses on its own.
      }
    }
  }

  adopt(reply) {
    this.session = sessionFrom(reply);
    writeSession(this.session);
  }

  /** An access token valid for a few more seconds, refreshing it when needed. */
  async accessToken() {
    if (!this.session) throw new ApiError(401, { error: "unauthorized", message: "signed out" });
    if (this.session.refreshAt > Date.now()) return this.session.accessToken;
    await this.refresh();
    return this.session.accessToken;
  }

  refresh() {
    this.refreshing ??= withLock(async () => {
      // Another tab may have rotated the token while this one waited for the lock.
      const stored = readSession();
      if (stored && stored.refreshToken !== this.session?.refreshToken) {
        this.session = stored;
        if (stored.refreshAt > Date.now()) return;
      }
      if (!this.session) throw new ApiError(401, { error: "unauthorized", message: "signed out" });
      try {
        this.adopt(await post("/auth/refresh", { refreshToken: this.session.refreshToken }));
      } catch (error) {
        if (error instanceof ApiError && (error.status === 401 || error.status === 422)) {
          this.session = null;
          writeSession(null);
          this.onSignedOut();
        }
        throw error;
      }
    }).finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /** An authenticated request; a 401 refreshes the token and retries once. */
  async request(method, path, body) {
    for (let attempt = 0; ; attempt += 1) {
      const token = await this.accessToken();
      const init = { method, headers: { authorization: `Bearer ${token}` } };
      if (body !== undefined) {
        init.headers["content-type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      const response = await fetch(`/api/v1${path}`, init);
      const reply = await readBody(response);
      if (response.ok) return reply;
      if (response.status === 401 && attempt === 0) {
        await this.refresh();
        continue;
      }
      throw new ApiError(response.status, reply);
    }
  }

  get(path) {
    return this.request("GET", path);
  }

  me() {
    return this.get("/users/me");
  }

  user(id) {
    return this.get(`/users/${id}`);
  }

  searchUsers(query) {
    return this.get(`/users?query=${encodeURIComponent(query)}`);
  }

  conversations() {
    return this.get("/conversations");
  }

  conversation(id) {
    return this.get(`/conversations/${id}`);
  }

  createDirect(peerId) {
    return this.request("POST", "/conversations", { kind: "direct", peerId });
  }

  createGroup(title, memberIds) {
    return this.request("POST", "/conversations", { kind: "group", title, memberIds });
  }

  addMember(conversationId, userId) {
    return this.request("POST", `/conversations/${conversationId}/members`, { userId });
  }

  history(conversationId, beforeSeq, limit) {
    return this.get(`/conversations/${conversationId}/messages?beforeSeq=${beforeSeq}&limit=${limit}`);
  }

  iceServers() {
    return this.get("/calls/ice-servers");
  }
}
