// The Courier web client: state, rendering and wiring. Message bodies and names are
// always set as text (textContent), never parsed as HTML.

import { Api, ApiError } from "./api.js";
import { RealtimeSocket } from "./socket.js";
import { CallController } from "./call.js";

const PAGE_SIZE = 30;
const SYNC_LIMIT = 200;
const TYPING_REFRESH_MS = 3000;
const TYPING_IDLE_MS = 4000;
// A little over the server's 6 s lapse: a lost typing:stopped still clears the line.
const TYPING_LAPSE_MS = 7000;

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

const api = new Api();
const socket = new RealtimeSocket(api);

const state = {
  me: null,
  users: new Map(),
  conversations: new Map(),
  /** conversationId → {bySeq: Map, hasMoreBefore, loading} */
  messages: new Map(),
  /** clientMsgId → {conversationId, body, replyToId, failed}; kept in sessionStorage too */
  outbox: new Map(),
  /** conversationId → Map(userId → lapse timer) */
  typing: new Map(),
  activeId: null,
  composer: { mode: "send", message: null },
  typingSentAt: 0,
  typingIdleTimer: null,
};

// ---------- names, times, notices ----------

function displayName(user) {
  return user?.displayName || user?.username || "…";
}

function initials(name) {
  return (name || "?").trim().slice(0, 1).toUpperCase();
}

function paintAvatar(node, name, key) {
  node.textContent = initials(name);
  node.dataset.hue = String(Math.abs(Number(key) || 0) % 8);
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

function shortTime(iso) {
  return iso ? timeFormat.format(new Date(iso)) : "";
}

function lastSeenText(user) {
  if (!user) return "";
  if (user.online) return "online";
  if (!user.lastSeen) return "offline";
  const seen = new Date(user.lastSeen);
  const sameDay = seen.toDateString() === new Date().toDateString();
  return `last seen ${sameDay ? `today at ${timeFormat.format(seen)}` : dayFormat.format(seen)}`;
}

let toastTimer = null;
function toast(text) {
  const node = $("toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    node.hidden = true;
  }, 4000);
}

function report(error) {
  if (error instanceof ApiError && error.status === 401) return;
  toast(error?.message ?? String(error));
}

function peerOf(conversation) {
  if (conversation.kind !== "direct") return null;
  const other = conversation.members.find((m) => m.userId !== state.me.id);
  return other ? state.users.get(other.userId) : null;
}

function conversationName(conversation) {
  if (conversation.kind === "group") return conversation.title ?? "Group";
  return displayName(peerOf(conversation));
}

function myMember(conversation) {
  return conversation.members.find((m) => m.userId === state.me.id);
}

function messagesOf(id) {
  let entry = state.messages.get(id);
  if (!entry) {
    entry = { bySeq: new Map(), hasMoreBefore: true, loaded: false, loading: false };
    state.messages.set(id, entry);
  }
  return entry;
}

function highestSeq(id) {
  let highest = 0;
  for (const seq of state.messages.get(id)?.bySeq.keys() ?? []) highest = Math.max(highest, seq);
  return highest;
}

function lowestSeq(id) {
  let lowest = Infinity;
  for (const seq of state.messages.get(id)?.bySeq.keys() ?? []) lowest = Math.min(lowest, seq);
  return lowest;
}

async function ensureUsers(ids) {
  const missing = [...new Set(ids)].filter((id) => !state.users.has(id));
  await Promise.all(
    missing.map(async (id) => {
      try {
        state.users.set(id, await api.user(id));
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
      }
    }),
  );
}

async function lookupUser(id) {
  await ensureUsers([id]);
  return state.users.get(id) ?? { id, username: `user ${id}` };
}

// ---------- views: auth ----------

let registering = false;

function showAuth() {
  $("app").hidden = true;
  $("auth").hidden = false;
  $("connection").hidden = true;
  $("auth-password").value = "";
  $("auth-username").focus();
}

function setAuthMode(register) {
  registering = register;
  $("tab-login").setAttribute("aria-selected", String(!register));
  $("tab-register").setAttribute("aria-selected", String(register));
  $("auth-display-row").hidden = !register;
  $("auth-submit").textContent = register ? "Create account" : "Sign in";
  $("auth-password").autocomplete = register ? "new-password" : "current-password";
  $("auth-error").textContent = "";
}

async function submitAuth(event) {
  event.preventDefault();
  const username = $("auth-username").value.trim();
  const password = $("auth-password").value;
  const submit = $("auth-submit");
  submit.disabled = true;
  $("auth-error").textContent = "";
  try {
    if (registering) await api.register(username, password, $("auth-display").value.trim());
    else await api.login(username, password);
    await enterApp();
  } catch (error) {
    const fields = error.fields ? Object.entries(error.fields).map(([f, why]) => `${f}: ${why.join(", ")}`) : [];
    $("auth-error").textContent = fields.length ? fields.join("; ") : error.message;
  } finally {
    submit.disabled = false;
  }
}

// ---------- views: the app ----------

async function enterApp() {
  state.me = await api.me();
  state.users.set(state.me.id, state.me);
  $("auth").hidden = true;
  $("app").hidden = false;
  $("me-name").textContent = displayName(state.me);
  paintAvatar($("me-avatar"), displayName(state.me), state.me.id);
  await loadConversations();
  restoreOutbox();
  socket.start();
  const remembered = Number(sessionStorage.getItem("courier.active"));
  if (remembered && state.conversations.has(remembered)) await openConversation(remembered, { focus: false });
  else renderChat();
}

function resetState() {
  socket.stop();
  // Signed out, here or in another tab: unsent messages are not kept for a later sign-in.
  if (state.me) sessionStorage.removeItem(outboxKey(state.me.id));
  document.title = "Courier";
  state.me = null;
  state.users.clear();
  state.conversations.clear();
  state.messages.clear();
  state.outbox.clear();
  state.typing.clear();
  state.activeId = null;
  $("conversation-list").replaceChildren();
  $("messages").replaceChildren();
  document.body.dataset.view = "list";
}

async function logout() {
  resetState();
  sessionStorage.removeItem("courier.active");
  await api.logout();
  showAuth();
}

api.onSignedOut = () => {
  resetState();
  showAuth();
};

async function loadConversations() {
  const list = await api.conversations();
  const memberIds = list.flatMap((c) => c.members.map((m) => m.userId));
  await ensureUsers(memberIds);
  for (const conversation of list) state.conversations.set(conversation.id, conversation);
  renderConversationList();
}

/** Current presence of every contact: events were missed while disconnected. */
async function refreshPresence() {
  const ids = [...state.users.keys()].filter((id) => id !== state.me.id);
  await Promise.all(
    ids.map(async (id) => {
      try {
        state.users.set(id, await api.user(id));
      } catch {
        // Kept as it was; the next event corrects it.
      }
    }),
  );
}

function sortedConversations() {
  return [...state.conversations.values()].sort((a, b) => {
    const at = a.lastMessage?.createdAt ?? a.createdAt;
    const bt = b.lastMessage?.createdAt ?? b.createdAt;
    return bt.localeCompare(at);
  });
}

function previewOf(message) {
  if (!message) return "No messages yet";
  const who = message.senderId === state.me.id ? "You: " : "";
  return message.deletedAt ? `${who}Message deleted` : `${who}${message.body}`;
}

function renderConversationList() {
  const list = $("conversation-list");
  const items = sortedConversations().map((conversation) => {
    const name = conversationName(conversation);
    const peer = peerOf(conversation);
    const avatar = el("span", { class: "avatar", "aria-hidden": "true" });
    paintAvatar(avatar, name, conversation.kind === "direct" ? peer?.id : conversation.id);
    const dot = peer ? el("span", { class: "dot", dataset: { online: String(Boolean(peer.online)) }, title: peer.online ? "online" : "offline" }) : null;
    const unread = conversation.unreadCount > 0
      ? el("span", { class: "badge", text: String(conversation.unreadCount), "aria-label": `${conversation.unreadCount} unread` })
      : null;
    const label = `${name}${peer ? (peer.online ? ", online" : ", offline") : ""}${conversation.unreadCount ? `, ${conversation.unreadCount} unread` : ""}`;
    const button = el(
      "button",
      {
        type: "button",
        class: "conversation",
        "aria-label": label,
        "aria-current": conversation.id === state.activeId ? "true" : null,
        dataset: { conversationId: String(conversation.id) },
        onclick: () => openConversation(conversation.id),
      },
      el("span", { class: "avatar-wrap" }, avatar, dot),
      el(
        "span",
        { class: "conversation-text" },
        el("span", { class: "conversation-top" }, el("span", { class: "conversation-name", text: name }), el("span", { class: "conversation-time muted", text: shortTime(conversation.lastMessage?.createdAt) })),
        el("span", { class: "conversation-bottom" }, el("span", { class: "conversation-preview muted", text: previewOf(conversation.lastMessage) }), unread),
      ),
    );
    return el("li", {}, button);
  });
  list.replaceChildren(...items);
  $("no-conversations").hidden = items.length > 0;
  const unread = [...state.conversations.values()].reduce((sum, c) => sum + (c.unreadCount ?? 0), 0);
  document.title = unread ? `(${unread}) Courier` : "Courier";
}

// ---------- people search ----------

let searchSerial = 0;
async function searchPeople(input, results, pick) {
  const query = input.value.trim();
  const serial = ++searchSerial;
  if (!query) {
    results.replaceChildren();
    results.hidden = true;
    return;
  }
  try {
    const found = (await api.searchUsers(query)).filter((u) => u.id !== state.me.id);
    if (serial !== searchSerial) return;
    for (const user of found) state.users.set(user.id, user);
    const items = found.map((user) =>
      el(
        "li",
        {},
        el(
          "button",
          { type: "button", class: "person", "aria-label": `${displayName(user)} (@${user.username})`, onclick: () => pick(user) },
          el("span", { class: "person-name", text: displayName(user) }),
          el("span", { class: "muted", text: `@${user.username}` }),
        ),
      ),
    );
    if (!items.length) items.push(el("li", { class: "muted empty", text: "Nobody by that name" }));
    results.replaceChildren(...items);
    results.hidden = false;
  } catch (error) {
    if (error instanceof ApiError && error.status === 422) return;
    report(error);
  }
}

async function startDirect(user) {
  try {
    const conversation = await api.createDirect(user.id);
    state.conversations.set(conversation.id, { unreadCount: 0, lastMessage: null, ...state.conversations.get(conversation.id), ...conversation });
    $("people-search").value = "";
    $("people-results").hidden = true;
    renderConversationList();
    await openConversation(conversation.id);
  } catch (error) {
    report(error);
  }
}

// ---------- groups ----------

const groupDraft = { mode: "create", members: new Map() };

function openGroupDialog(mode) {
  groupDraft.mode = mode;
  groupDraft.members.clear();
  const group = state.conversations.get(state.activeId);
  $("group-dialog-title").textContent = mode === "create" ? "New group" : `Add people to ${conversationName(group)}`;
  $("group-title").hidden = mode !== "create";
  document.querySelector('label[for="group-title"]').hidden = mode !== "create";
  $("group-title").required = mode === "create";
  $("group-title").value = "";
  $("group-search").value = "";
  $("group-results").replaceChildren();
  $("group-error").textContent = "";
  $("group-create").textContent = mode === "create" ? "Create" : "Add";
  renderGroupChips();
  $("group-dialog").showModal();
  (mode === "create" ? $("group-title") : $("group-search")).focus();
}

function renderGroupChips() {
  const chips = [...groupDraft.members.values()].map((user) =>
    el(
      "li",
      { class: "chip" },
      el("span", { text: displayName(user) }),
      el("button", {
        type: "button",
        class: "icon small",
        "aria-label": `Remove ${displayName(user)}`,
        text: "×",
        onclick: () => {
          groupDraft.members.delete(user.id);
          renderGroupChips();
        },
      }),
    ),
  );
  $("group-members").replaceChildren(...chips);
}

async function submitGroup(event) {
  event.preventDefault();
  const ids = [...groupDraft.members.keys()];
  try {
    if (groupDraft.mode === "create") {
      const title = $("group-title").value.trim();
      if (!title) {
        $("group-error").textContent = "Give the group a name.";
        return;
      }
      const conversation = await api.createGroup(title, ids);
      await ensureUsers(ids);
      state.conversations.set(conversation.id, { unreadCount: 0, lastMessage: null, ...conversation });
      $("group-dialog").close();
      renderConversationList();
      await openConversation(conversation.id);
    } else {
      for (const id of ids) await api.addMember(state.activeId, id);
      $("group-dialog").close();
      await reloadConversation(state.activeId);
    }
  } catch (error) {
    $("group-error").textContent = error.message;
  }
}

async function reloadConversation(id) {
  try {
    const fresh = await api.conversation(id);
    await ensureUsers(fresh.members.map((m) => m.userId));
    const known = state.conversations.get(id) ?? { unreadCount: 0, lastMessage: null };
    state.conversations.set(id, { ...known, ...fresh });
    renderConversationList();
    if (id === state.activeId) renderChat();
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) forgetConversation(id);
    else report(error);
  }
}

function forgetConversation(id) {
  state.conversations.delete(id);
  state.messages.delete(id);
  if (state.activeId === id) {
    state.activeId = null;
    document.body.dataset.view = "list";
  }
  renderConversationList();
  renderChat();
}

// ---------- the chat pane ----------

async function openConversation(id, { focus = true } = {}) {
  leaveComposerMode();
  stopTyping();
  state.activeId = id;
  sessionStorage.setItem("courier.active", String(id));
  document.body.dataset.view = "chat";
  renderConversationList();
  renderChat();
  const entry = messagesOf(id);
  try {
    if (!entry.loaded) await loadOlder(id, true);
    else if (socket.open) await catchUp(id);
  } catch (error) {
    // A dropped socket: the reconnect catches up.
    if (error.code !== "disconnected") report(error);
  }
  markRead(id);
  renderChat({ toBottom: true });
  if (focus) $("composer-input").focus();
}

async function loadOlder(id, first = false) {
  const entry = messagesOf(id);
  if (entry.loading || (!first && !entry.hasMoreBefore)) return;
  entry.loading = true;
  const list = $("messages");
  const previousHeight = list.scrollHeight;
  const previousTop = list.scrollTop;
  try {
    const conversation = state.conversations.get(id);
    const before = first ? Math.max(conversation?.lastSeq ?? 0, highestSeq(id)) + 1 : lowestSeq(id);
    const page = await api.history(id, before, PAGE_SIZE);
    for (const message of page.messages) entry.bySeq.set(message.seq, message);
    entry.hasMoreBefore = page.hasMore;
    entry.loaded = true;
    await ensureUsers(page.messages.map((m) => m.senderId));
  } catch (error) {
    report(error);
  } finally {
    entry.loading = false;
  }
  if (id !== state.activeId) return;
  renderMessages();
  if (first) list.scrollTop = list.scrollHeight;
  else list.scrollTop = previousTop + (list.scrollHeight - previousHeight);
}

async function refreshNewestPage(id) {
  const entry = state.messages.get(id);
  if (!entry?.loaded) return;
  const page = await api.history(id, highestSeq(id) + 1, PAGE_SIZE);
  for (const message of page.messages) entry.bySeq.set(message.seq, message);
}

function renderChat({ toBottom = false } = {}) {
  const conversation = state.conversations.get(state.activeId);
  const chat = $("chat");
  chat.dataset.empty = String(!conversation);
  $("chat-placeholder").hidden = Boolean(conversation);
  for (const id of ["messages", "composer", "typing"]) $(id).hidden = !conversation;
  if (!conversation) {
    $("chat-name").textContent = "";
    $("chat-presence").textContent = "";
    for (const id of ["call-audio", "call-video", "add-members"]) $(id).hidden = true;
    $("chat-avatar").hidden = true;
    return;
  }
  const name = conversationName(conversation);
  const peer = peerOf(conversation);
  $("chat-name").textContent = name;
  $("chat-avatar").hidden = false;
  paintAvatar($("chat-avatar"), name, peer ? peer.id : conversation.id);
  renderHeaderPresence();
  $("call-audio").hidden = !peer;
  $("call-video").hidden = !peer;
  $("add-members").hidden = conversation.kind !== "group";
  renderMessages({ toBottom });
  renderTyping();
}

function renderHeaderPresence() {
  const conversation = state.conversations.get(state.activeId);
  if (!conversation) return;
  const peer = peerOf(conversation);
  const line = $("chat-presence");
  if (peer) {
    line.textContent = lastSeenText(peer);
    line.dataset.online = String(Boolean(peer.online));
  } else {
    const online = conversation.members.filter((m) => m.userId !== state.me.id && state.users.get(m.userId)?.online).length;
    line.textContent = `${conversation.members.length} members${online ? `, ${online} online` : ""}`;
    delete line.dataset.online;
  }
}

/** How far the other members got with my message: sent, delivered or read. */
function tickState(conversation, seq) {
  const others = conversation.members.filter((m) => m.userId !== state.me.id);
  if (!others.length) return "sent";
  if (others.every((m) => m.readSeq >= seq)) return "read";
  if (others.every((m) => m.deliveredSeq >= seq)) return "delivered";
  return "sent";
}

const TICKS = {
  pending: ["🕓", "Sending"],
  failed: ["!", "Not sent"],
  sent: ["✓", "Sent"],
  delivered: ["✓✓", "Delivered"],
  read: ["✓✓", "Read"],
};

function tick(kind) {
  const [symbol, label] = TICKS[kind];
  return el("span", { class: "tick", dataset: { state: kind }, "aria-label": label, title: label, text: symbol });
}

function messageItem(conversation, message) {
  const mine = message.senderId === state.me.id;
  const sender = state.users.get(message.senderId);
  const deleted = Boolean(message.deletedAt);
  const children = [];
  if (conversation.kind === "group" && !mine) children.push(el("span", { class: "sender", text: displayName(sender) }));
  if (message.replyTo) {
    const quoted = state.users.get(message.replyTo.senderId);
    children.push(
      el(
        "blockquote",
        { class: "quote", "aria-label": `Reply to ${displayName(quoted)}` },
        el("span", { class: "quote-sender", text: displayName(quoted) }),
        el("span", { class: "quote-text", text: message.replyTo.preview || "Message deleted" }),
      ),
    );
  }
  children.push(el("p", { class: deleted ? "body deleted" : "body", text: deleted ? "This message was deleted" : message.body }));
  const meta = el("span", { class: "meta" });
  if (message.editedAt && !deleted) meta.append(el("span", { class: "edited", text: "edited" }));
  meta.append(el("time", { datetime: message.createdAt, text: shortTime(message.createdAt) }));
  if (mine && !deleted) meta.append(tick(tickState(conversation, message.seq)));
  children.push(meta);
  if (!deleted) {
    const actions = el("span", { class: "actions" });
    actions.append(el("button", { type: "button", class: "action", text: "Reply", "aria-label": "Reply", onclick: () => beginReply(message) }));
    if (mine) {
      actions.append(el("button", { type: "button", class: "action", text: "Edit", "aria-label": "Edit", onclick: () => beginEdit(message) }));
      actions.append(el("button", { type: "button", class: "action", text: "Delete", "aria-label": "Delete", onclick: () => deleteMessage(message) }));
    }
    children.push(actions);
  }
  return el(
    "li",
    {
      class: `message${mine ? " mine" : ""}${deleted ? " is-deleted" : ""}`,
      dataset: { seq: String(message.seq), messageId: String(message.id), mine: String(mine), deleted: String(deleted), edited: String(Boolean(message.editedAt)) },
    },
    ...children,
  );
}

function pendingItem(pending) {
  const children = [];
  if (pending.replyTo) {
    children.push(
      el("blockquote", { class: "quote" }, el("span", { class: "quote-sender", text: displayName(state.users.get(pending.replyTo.senderId)) }), el("span", { class: "quote-text", text: pending.replyTo.preview })),
    );
  }
  children.push(el("p", { class: "body", text: pending.body }));
  children.push(el("span", { class: "meta" }, tick(pending.failed ? "failed" : "pending")));
  return el("li", { class: "message mine pending", dataset: { pending: "true", mine: "true" } }, ...children);
}

function renderMessages({ toBottom = false } = {}) {
  const id = state.activeId;
  const conversation = state.conversations.get(id);
  if (!conversation) return;
  const list = $("messages");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const entry = messagesOf(id);
  const ordered = [...entry.bySeq.values()].sort((a, b) => a.seq - b.seq);
  const items = [];
  if (entry.loaded && !entry.hasMoreBefore) items.push(el("li", { class: "history-start muted", text: "Start of the conversation" }));
  else if (entry.loaded) items.push(el("li", { class: "history-start muted", text: "Scroll up for older messages" }));
  for (const message of ordered) items.push(messageItem(conversation, message));
  for (const pending of state.outbox.values()) if (pending.conversationId === id) items.push(pendingItem(pending));
  list.replaceChildren(...items);
  if (toBottom || nearBottom) list.scrollTop = list.scrollHeight;
}

function renderTyping() {
  const typers = [...(state.typing.get(state.activeId)?.keys() ?? [])].map((id) => displayName(state.users.get(id)));
  const line = $("typing");
  if (!typers.length) line.textContent = "";
  else if (typers.length === 1) line.textContent = `${typers[0]} is typing…`;
  else line.textContent = `${typers.join(", ")} are typing…`;
}

// ---------- composing ----------

function setComposerContext(text) {
  $("composer-context").hidden = !text;
  $("composer-context-text").textContent = text ?? "";
}

function beginReply(message) {
  state.composer = { mode: "reply", message };
  setComposerContext(`Replying to ${displayName(state.users.get(message.senderId))}: ${message.body.slice(0, 80)}`);
  $("composer-input").focus();
}

function beginEdit(message) {
  state.composer = { mode: "edit", message };
  setComposerContext("Editing message");
  const input = $("composer-input");
  input.value = message.body;
  autosize();
  input.focus();
}

function leaveComposerMode() {
  if (state.composer.mode === "edit") $("composer-input").value = "";
  state.composer = { mode: "send", message: null };
  setComposerContext(null);
  autosize();
}

function autosize() {
  const input = $("composer-input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
}

function onComposerKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submitComposer();
  } else if (event.key === "Escape" && state.composer.mode !== "send") {
    event.preventDefault();
    leaveComposerMode();
  }
}

function onComposerInput() {
  autosize();
  const id = state.activeId;
  if (!id) return;
  const now = Date.now();
  if (now - state.typingSentAt > TYPING_REFRESH_MS) {
    socket.notify("typing:start", { conversationId: id });
    state.typingSentAt = now;
  }
  clearTimeout(state.typingIdleTimer);
  state.typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(state.typingIdleTimer);
  if (state.typingSentAt && state.activeId) socket.notify("typing:stop", { conversationId: state.activeId });
  state.typingSentAt = 0;
}

async function submitComposer(event) {
  event?.preventDefault();
  const input = $("composer-input");
  const body = input.value;
  const id = state.activeId;
  if (!id || !body.trim()) return;
  const { mode, message } = state.composer;
  input.value = "";
  leaveComposerMode();
  clearTimeout(state.typingIdleTimer);
  // The server ends the typing flag when the message is stored.
  state.typingSentAt = 0;
  if (mode === "edit") {
    try {
      const reply = await socket.request("message:edit", { messageId: message.id, body });
      storeMessage(reply.message);
    } catch (error) {
      input.value = body;
      beginEdit(message);
      report(error);
    }
    return;
  }
  const clientMsgId = crypto.randomUUID();
  const pending = { conversationId: id, clientMsgId, body, replyToId: mode === "reply" ? message.id : null, replyTo: null, failed: false };
  if (mode === "reply") pending.replyTo = { id: message.id, senderId: message.senderId, preview: message.body.slice(0, 100) };
  state.outbox.set(clientMsgId, pending);
  saveOutbox();
  renderMessages({ toBottom: true });
  await deliverPending(pending);
}

// Unsent messages outlive a reload of the tab: they are sent again with the same
// clientMsgId, which the server stores at most once.
function outboxKey(userId) {
  return `courier.outbox.${userId}`;
}

function saveOutbox() {
  if (!state.me) return;
  // A message the server refused for good is shown as failed, and not sent again later.
  const unsent = [...state.outbox.values()]
    .filter((pending) => !pending.failed)
    .map(({ conversationId, clientMsgId, body, replyToId, replyTo }) => ({ conversationId, clientMsgId, body, replyToId, replyTo }));
  try {
    if (unsent.length) sessionStorage.setItem(outboxKey(state.me.id), JSON.stringify(unsent));
    else sessionStorage.removeItem(outboxKey(state.me.id));
  } catch {
    // Storage full or blocked: the messages are still sent from memory.
  }
}

function restoreOutbox() {
  let unsent = [];
  try {
    unsent = JSON.parse(sessionStorage.getItem(outboxKey(state.me.id)) ?? "[]");
  } catch {
    // Unreadable: nothing to restore.
  }
  for (const pending of Array.isArray(unsent) ? unsent : []) {
    if (state.conversations.has(pending?.conversationId) && typeof pending.clientMsgId === "string" && typeof pending.body === "string") {
      state.outbox.set(pending.clientMsgId, { ...pending, failed: false });
    }
  }
  saveOutbox();
}

function forgetSent(clientMsgId) {
  if (state.outbox.delete(clientMsgId)) saveOutbox();
}

/** Sends one queued message; kept in the outbox while disconnected, resent on reconnect. */
async function deliverPending(pending) {
  if (!socket.open || pending.sending) return;
  pending.sending = true;
  try {
    const data = { conversationId: pending.conversationId, clientMsgId: pending.clientMsgId, body: pending.body };
    if (pending.replyToId) data.replyToId = pending.replyToId;
    const reply = await socket.request("message:send", data);
    forgetSent(pending.clientMsgId);
    storeMessage(reply.message);
  } catch (error) {
    if (error.code === "rate_limited" || error.code === "unavailable" || error.code === "internal") {
      // Safe to repeat: the clientMsgId makes a retried send store nothing twice.
      // Not after a sign-out, when the outbox was emptied (another user may be signed in).
      setTimeout(() => {
        if (state.outbox.get(pending.clientMsgId) === pending) deliverPending(pending);
      }, (error.retryAfter ?? 1) * 1000);
    } else if (error.code !== "disconnected" && error.code !== "timeout") {
      pending.failed = true;
      saveOutbox();
      report(error);
    }
  } finally {
    pending.sending = false;
    if (pending.conversationId === state.activeId) renderMessages();
  }
}

async function deleteMessage(message) {
  try {
    const reply = await socket.request("message:delete", { messageId: message.id });
    storeMessage(reply.message);
  } catch (error) {
    report(error);
  }
}

// ---------- events ----------

/** Adds or replaces a message; a new one updates the list, unread count and receipts. */
function storeMessage(message) {
  const id = message.conversationId;
  const conversation = state.conversations.get(id);
  if (!conversation) {
    reloadConversation(id);
    return;
  }
  const entry = messagesOf(id);
  const known = entry.bySeq.get(message.seq);
  if (message.senderId === state.me.id) forgetSent(message.clientMsgId);
  const fresh = !known && message.seq > (conversation.lastSeq ?? 0);
  if (entry.loaded || known) entry.bySeq.set(message.seq, message);
  if (message.seq >= (conversation.lastSeq ?? 0)) {
    conversation.lastSeq = message.seq;
    conversation.lastMessage = message;
  }
  if (fresh && message.senderId !== state.me.id) {
    conversation.unreadCount = (conversation.unreadCount ?? 0) + 1;
    clearTyper(id, message.senderId);
    markDelivered(id, message.seq);
  }
  if (fresh && message.senderId === state.me.id) {
    // My own message: every earlier one is read by me.
    const me = myMember(conversation);
    if (me) me.readSeq = Math.max(me.readSeq, message.seq);
  }
  if (id === state.activeId) {
    renderMessages();
    markRead(id);
  }
  renderConversationList();
}

function markDelivered(id, seq) {
  const me = myMember(state.conversations.get(id) ?? { members: [] });
  if (!me || me.deliveredSeq >= seq) return;
  me.deliveredSeq = seq;
  socket.request("message:delivered", { conversationId: id, seq }).catch(() => {});
}

function markRead(id) {
  const conversation = state.conversations.get(id);
  if (!conversation || id !== state.activeId || document.visibilityState !== "visible") return;
  const seq = conversation.lastSeq ?? 0;
  const me = myMember(conversation);
  if (!me || seq === 0) return;
  conversation.unreadCount = 0;
  renderConversationList();
  if (me.readSeq >= seq) return;
  me.readSeq = seq;
  me.deliveredSeq = Math.max(me.deliveredSeq, seq);
  socket.request("message:read", { conversationId: id, seq }).catch(() => {
    me.readSeq = 0; // retried on the next view or reconnect
  });
}

function updateWatermark(data, field) {
  const conversation = state.conversations.get(data.conversationId);
  const member = conversation?.members.find((m) => m.userId === data.userId);
  if (!member) return;
  member[field] = Math.max(member[field], data.seq);
  if (field === "readSeq") member.deliveredSeq = Math.max(member.deliveredSeq, data.seq);
  if (data.userId === state.me.id && field === "readSeq") {
    conversation.unreadCount = 0;
    renderConversationList();
  }
  if (conversation.id === state.activeId) renderMessages();
}

function clearTyper(conversationId, userId) {
  const typers = state.typing.get(conversationId);
  if (!typers?.has(userId)) return;
  clearTimeout(typers.get(userId));
  typers.delete(userId);
  if (conversationId === state.activeId) renderTyping();
}

function setTyper(conversationId, userId) {
  let typers = state.typing.get(conversationId);
  if (!typers) state.typing.set(conversationId, (typers = new Map()));
  clearTimeout(typers.get(userId));
  typers.set(userId, setTimeout(() => clearTyper(conversationId, userId), TYPING_LAPSE_MS));
  if (conversationId === state.activeId) renderTyping();
}

function setPresence(userId, online, lastSeen) {
  const user = state.users.get(userId);
  if (!user) return;
  user.online = online;
  if (lastSeen) user.lastSeen = lastSeen;
  renderConversationList();
  renderHeaderPresence();
}

async function handleEvent(type, data) {
  switch (type) {
    case "message:received":
    case "message:edited":
    case "message:deleted": {
      const id = data.conversationId;
      if (type === "message:received" && state.messages.get(id)?.loaded && data.seq > highestSeq(id) + 1) {
        // A gap (a dropped push): fetch what lies between before showing this one.
        await catchUp(id);
      }
      await ensureUsers([data.senderId]);
      storeMessage(data);
      break;
    }
    case "message:delivered":
      updateWatermark(data, "deliveredSeq");
      break;
    case "message:read":
      updateWatermark(data, "readSeq");
      break;
    case "typing:started":
      await ensureUsers([data.userId]);
      setTyper(data.conversationId, data.userId);
      break;
    case "typing:stopped":
      clearTyper(data.conversationId, data.userId);
      break;
    case "user:online":
      setPresence(data.userId, true, null);
      break;
    case "user:offline":
      setPresence(data.userId, false, data.lastSeen);
      break;
    case "user:status": {
      const user = state.users.get(data.userId);
      if (user) Object.assign(user, { status: data.status, statusText: data.text });
      break;
    }
    case "conversation:created":
      await ensureUsers(data.members.map((m) => m.userId));
      state.conversations.set(data.id, { unreadCount: 0, lastMessage: null, ...state.conversations.get(data.id), ...data });
      renderConversationList();
      break;
    case "member:joined":
    case "member:left":
      if (type === "member:left" && data.userId === state.me.id) forgetConversation(data.conversationId);
      else await reloadConversation(data.conversationId);
      break;
    case "call:offer":
    case "call:answer":
    case "call:ice":
    case "call:hangup":
      await calls.handle(type, data, lookupUser);
      break;
    default:
      break;
  }
}

/** Everything after the newest seq held, page by page: no gap, and no duplicate (by seq). */
async function catchUp(id) {
  const entry = state.messages.get(id);
  if (!entry?.loaded) return;
  for (;;) {
    const page = await socket.request("sync", { conversationId: id, afterSeq: highestSeq(id), limit: SYNC_LIMIT });
    await ensureUsers(page.messages.map((m) => m.senderId));
    for (const message of page.messages) storeMessage(message);
    if (!page.hasMore || !page.messages.length) break;
  }
}

async function onSocketOpen() {
  try {
    const before = new Map([...state.conversations].map(([id, c]) => [id, c.lastSeq]));
    await loadConversations();
    await refreshPresence();
    for (const id of state.conversations.keys()) {
      await catchUp(id);
      const conversation = state.conversations.get(id);
      if (conversation.lastSeq > (before.get(id) ?? 0)) markDelivered(id, conversation.lastSeq);
    }
    for (const pending of [...state.outbox.values()]) await deliverPending(pending);
    // sync goes by seq: edits and deletions made while away show once their page is read again.
    if (state.activeId) await refreshNewestPage(state.activeId);
    if (state.activeId) {
      renderChat();
      markRead(state.activeId);
    }
    renderConversationList();
  } catch (error) {
    if (error.code !== "disconnected") report(error);
  }
}

function onSocketState(status) {
  const banner = $("connection");
  banner.hidden = status !== "reconnecting";
  banner.textContent = status === "reconnecting" ? "Reconnecting…" : "";
  document.body.dataset.connection = status;
}

// Events are handled one after another, in the order they came: a call's ICE candidates
// must not overtake its offer, nor an edit the message it changes.
let eventsHandled = Promise.resolve();
socket.onEvent = (type, data) => {
  eventsHandled = eventsHandled.then(() => handleEvent(type, data)).catch(report);
};
socket.onOpen = () => {
  onSocketOpen();
};
socket.onStateChange = onSocketState;

// ---------- calls ----------

const callUi = {
  show(peer, text, incoming) {
    $("call-peer").textContent = displayName(peer);
    $("call-state").textContent = text;
    $("call-accept").hidden = !incoming;
    $("call-hangup").textContent = incoming ? "Decline" : "Hang up";
    if (!$("call-dialog").open) $("call-dialog").showModal();
    (incoming ? $("call-accept") : $("call-hangup")).focus();
  },
  state(text) {
    $("call-state").textContent = text;
    if (text !== "Incoming call") {
      $("call-accept").hidden = true;
      $("call-hangup").textContent = "Hang up";
    }
  },
  localStream(stream) {
    $("call-local").srcObject = stream;
  },
  remoteStream(stream) {
    $("call-remote").srcObject = stream;
  },
  close() {
    $("call-local").srcObject = null;
    $("call-remote").srcObject = null;
    setTimeout(() => {
      if (!calls.busy && $("call-dialog").open) $("call-dialog").close();
    }, 1500);
  },
};

const calls = new CallController({ socket, api, ui: callUi });

function startCall(withVideo) {
  const peer = peerOf(state.conversations.get(state.activeId) ?? { kind: "group" });
  if (peer) calls.start(peer, withVideo);
}

// ---------- wiring ----------

function wire() {
  $("tab-login").addEventListener("click", () => setAuthMode(false));
  $("tab-register").addEventListener("click", () => setAuthMode(true));
  $("auth-form").addEventListener("submit", submitAuth);
  $("logout").addEventListener("click", logout);
  $("new-group").addEventListener("click", () => openGroupDialog("create"));
  $("add-members").addEventListener("click", () => openGroupDialog("add"));
  $("group-cancel").addEventListener("click", () => $("group-dialog").close());
  $("group-form").addEventListener("submit", submitGroup);
  $("group-search").addEventListener("input", () =>
    searchPeople($("group-search"), $("group-results"), (user) => {
      groupDraft.members.set(user.id, user);
      $("group-search").value = "";
      $("group-results").replaceChildren();
      renderGroupChips();
      $("group-search").focus();
    }),
  );
  $("people-search").addEventListener("input", () => searchPeople($("people-search"), $("people-results"), startDirect));
  $("people-search").addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      $("people-search").value = "";
      $("people-results").hidden = true;
    }
  });
  $("back").addEventListener("click", () => {
    document.body.dataset.view = "list";
    document.querySelector(`[data-conversation-id="${state.activeId}"]`)?.focus();
  });
  $("composer").addEventListener("submit", submitComposer);
  $("composer-input").addEventListener("keydown", onComposerKey);
  $("composer-input").addEventListener("input", onComposerInput);
  $("composer-cancel").addEventListener("click", () => {
    leaveComposerMode();
    $("composer-input").focus();
  });
  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 80 && state.activeId) loadOlder(state.activeId);
  });
  $("call-audio").addEventListener("click", () => startCall(false));
  $("call-video").addEventListener("click", () => startCall(true));
  $("call-accept").addEventListener("click", () => calls.accept());
  $("call-hangup").addEventListener("click", () => calls.hangup());
  $("call-dialog").addEventListener("cancel", (event) => {
    event.preventDefault();
    calls.hangup();
  });
  document.addEventListener("visibilitychange", () => {
    if (state.activeId) markRead(state.activeId);
  });
  // Presence texts ("last seen today at…") age; a minute is their resolution.
  setInterval(renderHeaderPresence, 60000);
}

async function boot() {
  wire();
  setAuthMode(false);
  if (!api.signedIn) {
    showAuth();
    return;
  }
  try {
    await enterApp();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) showAuth();
    else {
      showAuth();
      $("auth-error").textContent = error.message;
    }
  }
}

boot();
