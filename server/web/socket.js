// The native WebSocket: commands answered by `ref`, events to a handler, and a
// reconnect with back-off after any drop. The owner catches up with `sync` on `onOpen`.

const COMMAND_TIMEOUT_MS = 10000;
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 8000;
const TOKEN_EXPIRED = 4001;

export class CommandError extends Error {
  constructor(frame) {
    super(frame.message ?? frame.error);
    this.code = frame.error;
    this.retryAfter = frame.retryAfter ?? null;
  }
}

export class RealtimeSocket {
  constructor(api) {
    this.api = api;
    this.socket = null;
    this.nextRef = 1;
    this.waiting = new Map();
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.open = false;
    this.onEvent = () => {};
    this.onOpen = () => {};
    this.onStateChange = () => {};
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close(1000, "signed out");
    this.socket = null;
    this.setOpen(false);
  }

  setOpen(open) {
    this.open = open;
    this.onStateChange(open ? "open" : this.stopped ? "stopped" : "reconnecting");
  }

  async connect() {
    if (this.stopped) return;
    let token;
    try {
      // A fresh token: a socket lives no longer than the token it was opened with.
      token = await this.api.accessToken();
    } catch {
      this.retryLater();
      return;
    }
    if (this.stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/ws?access_token=${encodeURIComponent(token)}`);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.attempt = 0;
      this.setOpen(true);
      this.onOpen();
    });
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.failWaiting();
      this.setOpen(false);
      if (event.code === TOKEN_EXPIRED) this.attempt = 0;
      this.retryLater();
    });
  }

  retryLater() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    // Jitter spreads the reconnects of many clients after a server restart.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  failWaiting() {
    for (const { reject, timer } of this.waiting.values()) {
      clearTimeout(timer);
      reject(new CommandError({ error: "disconnected", message: "the connection dropped" }));
    }
    this.waiting.clear();
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.type === "ack" || frame.type === "error") {
      // Errors without a waiter answer typing notices, which are best effort.
      const waiter = this.waiting.get(frame.ref);
      if (!waiter) return;
      this.waiting.delete(frame.ref);
      clearTimeout(waiter.timer);
      if (frame.type === "ack") waiter.resolve(frame.data);
      else waiter.reject(new CommandError(frame));
      return;
    }
    this.onEvent(frame.type, frame.data);
  }

  /** Open, and not yet closing: the close event comes after the server's close frame. */
  get writable() {
    return this.open && this.socket?.readyState === WebSocket.OPEN;
  }

  /** Sends a command and resolves with its ack's data. */
  request(type, data) {
    return new Promise((resolve, reject) => {
      if (!this.writable) {
        reject(new CommandError({ error: "disconnected", message: "not connected" }));
        return;
      }
      const ref = `r${this.nextRef++}`;
      const timer = setTimeout(() => {
        this.waiting.delete(ref);
        reject(new CommandError({ error: "timeout", message: `${type} got no reply` }));
      }, COMMAND_TIMEOUT_MS);
      this.waiting.set(ref, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ type, ref, data }));
    });
  }

  /** Sends a command that gets no ack (typing). Dropped while disconnected. */
  notify(type, data) {
    if (this.writable) this.socket.send(JSON.stringify({ type, data }));
  }
}
