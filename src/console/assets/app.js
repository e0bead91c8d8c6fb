// Admin console for the user directory.
//
// It talks to the server it was loaded from with the Connect protocol (proto3 JSON over
// fetch). There is no framework: each view is a <section> shown or hidden with the `hidden`
// attribute, and the route lives in the URL hash so the back button works. The content
// security policy forbids inline scripts and styles, so all behaviour is wired up here and
// all looks come from classes in app.css.
"use strict";

const USERS = "userservice.UserService/";
const AUTH = "userservice.AuthService/";
const PAGE_SIZE = 20;

const ADMIN = "USER_ROLE_ADMIN";
const MODERATOR = "USER_ROLE_MODERATOR";
const ROLE_USER = "USER_ROLE_USER";
const ACTIVE = "USER_STATUS_ACTIVE";
const SUSPENDED = "USER_STATUS_SUSPENDED";

const ROLE_LABELS = {
  USER_ROLE_USER: "User",
  USER_ROLE_ADMIN: "Admin",
  USER_ROLE_MODERATOR: "Moderator",
  USER_ROLE_UNSPECIFIED: "Unspecified",
};
const STATUS_LABELS = {
  USER_STATUS_ACTIVE: "Active",
  USER_STATUS_INACTIVE: "Inactive",
  USER_STATUS_SUSPENDED: "Suspended",
  USER_STATUS_DELETED: "Deleted",
  USER_STATUS_UNSPECIFIED: "Unspecified",
};

const CONFLICT_TEXT =
  "This user was changed by someone else since you opened it. Nothing was saved. " +
  "The current values are shown below; review them and save again.";

// Failures worth another try of a token refresh; anything else means the session is over.
const TRANSIENT = new Set(["unavailable", "resource_exhausted", "deadline_exceeded", "internal", "unknown"]);

// What an HTTP status means when the body carries no Connect error (a proxy answered, say).
const CODE_BY_HTTP = {
  401: "unauthenticated",
  403: "permission_denied",
  404: "unimplemented",
  429: "unavailable",
  502: "unavailable",
  503: "unavailable",
  504: "unavailable",
};

const $ = (id) => document.getElementById(id);

// --- State. The tokens live in this variable only: never in storage or cookies. ---

let session = null; // { accessToken, refreshToken, expiresAt (ms), user }
let refreshTimer = 0;
let refreshing = null; // the Refresh call in flight, shared: a refresh token works only once
let watchController = null; // aborts the WatchUsers stream
let reloadTimer = 0;

// The list's filters and keyset paging: `token` is the current page's, `earlier` the ones before.
const list = { query: "", role: "", status: "", token: "", next: "", earlier: [], seq: 0 };

// The user shown on the user page, as the server last returned it. Its etag goes with every
// write from that page, so a change made elsewhere meanwhile is refused, never overwritten.
let opened = null;
let pageSeq = 0;

// --- Talking to the server ---

class RpcError extends Error {
  constructor(code, message, retryAfter = null) {
    super(message);
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: the answer came from something other than the Connect handler.
  }
  const code = typeof body?.code === "string" ? body.code : CODE_BY_HTTP[response.status] ?? "unknown";
  const message =
    typeof body?.message === "string" && body.message !== ""
      ? body.message
      : `The request failed (${code.replaceAll("_", " ")}, HTTP ${response.status}).`;
  return new RpcError(code, message, response.headers.get("retry-after"));
}

// One unary call. `auth: false` sends no token (Login and Refresh must work with an expired
// one); `retried` marks the second attempt after a refresh.
async function call(method, body = {}, { auth = true, retried = false } = {}) {
  const sentToken = auth ? session?.accessToken : undefined;
  const headers = { "Content-Type": "application/json", "Connect-Protocol-Version": "1" };
  if (sentToken) headers.Authorization = `Bearer ${sentToken}`;
  let response;
  try {
    response = await fetch(`/${method}`, { method: "POST", headers, body: JSON.stringify(body) });
  } catch {
    throw new RpcError("unavailable", "The server could not be reached. Check the connection and try again.");
  }
  if (response.status === 200) return response.json();
  const error = await errorFrom(response);
  if (error.code === "unauthenticated" && sentToken && method !== `${AUTH}Logout`) {
    // The access token expired or was revoked: refresh once and try again, then give up.
    if (!retried && (await renewSession(sentToken))) return call(method, body, { auth, retried: true });
    endSession();
    throw new RpcError("unauthenticated", `Your session has ended (${error.message}). Please sign in again.`);
  }
  throw error;
}

// --- Session ---

function startSession(reply) {
  session = {
    accessToken: reply.accessToken,
    refreshToken: reply.refreshToken ?? "",
    expiresAt: Date.parse(reply.expiresAt ?? ""),
    user: reply.user ?? {},
  };
  showSessionInfo();
  scheduleRefresh();
}

function refreshSession() {
  if (!refreshing) {
    const current = session;
    refreshing = call(`${AUTH}Refresh`, { refreshToken: current.refreshToken }, { auth: false })
      .then((reply) => {
        // Signed out while the call ran: drop the new tokens.
        if (session === current) startSession(reply);
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

// After a call was refused as unauthenticated with `staleToken`: makes sure the session has a
// newer access token. False when the session cannot go on.
async function renewSession(staleToken) {
  if (!session) return false;
  if (session.accessToken !== staleToken) return true; // refreshed while that call ran
  try {
    await refreshSession();
    return session !== null;
  } catch {
    return false;
  }
}

// Refresh at 80% of the token's remaining life, so calls never wait on an expired token.
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const remaining = session.expiresAt - Date.now();
  if (!Number.isFinite(remaining) || !session.refreshToken) return;
  const delay = Math.min(Math.max(remaining * 0.8, 1000), 2 ** 31 - 1);
  refreshTimer = setTimeout(refreshFromTimer, delay);
}

async function refreshFromTimer() {
  if (!session) return;
  try {
    await refreshSession(); // schedules the next refresh itself
  } catch (error) {
    if (!session) return;
    if (error instanceof RpcError && TRANSIENT.has(error.code)) {
      refreshTimer = setTimeout(refreshFromTimer, 5000);
    } else {
      endSession();
      showAlert("Your session has ended. Please sign in again.");
    }
  }
}

// Forgets everything the signed-in user could see, and goes back to the sign-in form.
function endSession() {
  session = null;
  opened = null;
  clearTimeout(refreshTimer);
  clearTimeout(reloadTimer);
  stopWatch();
  // The next person to sign in here starts from a clean list and empty forms.
  Object.assign(list, { query: "", role: "", status: "", token: "", next: "", earlier: [] });
  for (const form of ["filters", "create-form", "password-form"]) $(form).reset();
  $("users-body").replaceChildren();
  $("total-count").textContent = "";
  showSessionInfo();
  route();
}

const isAdmin = () => session?.user.role === ADMIN;
const isStaff = () => isAdmin() || session?.user.role === MODERATOR;

function showSessionInfo() {
  $("session-info").hidden = !session;
  $("nav").hidden = !isStaff();
  if (!session) return;
  $("whoami").textContent = session.user.username ?? "";
  $("whoami").href = `#/users/${encodeURIComponent(session.user.id ?? "")}`;
  $("whoami-role").textContent = ROLE_LABELS[session.user.role] ?? "User";
}

// --- Live updates: one WatchUsers stream, Connect envelopes read off the fetch body ---

const END_STREAM = 0x02;
const decoder = new TextDecoder();

function envelope(message) {
  const json = new TextEncoder().encode(JSON.stringify(message));
  const bytes = new Uint8Array(5 + json.length);
  new DataView(bytes.buffer).setUint32(1, json.length); // flags byte 0 stays 0
  bytes.set(json, 5);
  return bytes;
}

// Yields each envelope of the body. A chunk may hold several envelopes or part of one.
async function* envelopes(reader) {
  let buffer = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset, buffer.length).getUint32(1);
      if (buffer.length < 5 + length) break;
      const flags = buffer[0];
      const text = decoder.decode(buffer.subarray(5, 5 + length));
      buffer = buffer.subarray(5 + length);
      yield { flags, message: text === "" ? {} : JSON.parse(text) };
    }
  }
}

function startWatch() {
  stopWatch();
  if (!isStaff()) return;
  watchController = new AbortController();
  watchLoop(watchController.signal);
}

function stopWatch() {
  watchController?.abort();
  watchController = null;
  setLive("off");
}

async function watchLoop(signal) {
  let delay = 250;
  let reconnecting = false;
  while (!signal.aborted && session) {
    setLive("connecting");
    const token = session.accessToken; // the current one: it may have been refreshed
    const started = Date.now();
    try {
      await watchOnce(signal, token, () => {
        setLive("open");
        // Changes made while disconnected sent no event: read the page again.
        if (reconnecting) scheduleReload();
      });
    } catch (error) {
      if (signal.aborted) return;
      if (error.code === "unauthenticated" && !(await renewSession(token))) {
        endSession();
        showAlert(`Your session has ended (${error.message}). Please sign in again.`);
        return;
      }
      // Asking again will not help: stay without live updates.
      if (error.code === "permission_denied" || error.code === "unimplemented") {
        setLive("off");
        return;
      }
    }
    if (signal.aborted) return;
    reconnecting = true;
    setLive("connecting");
    // After a stream that stayed up a while, reconnect soon; after one that failed at once,
    // wait longer each time, up to 8 s.
    delay = Date.now() - started > 10_000 ? 500 : Math.min(delay * 2, 8000);
    await sleep(delay, signal);
  }
}

async function watchOnce(signal, token, onOpen) {
  const response = await fetch(`/${USERS}WatchUsers`, {
    method: "POST",
    signal,
    headers: {
      "Content-Type": "application/connect+json",
      "Connect-Protocol-Version": "1",
      Authorization: `Bearer ${token}`,
    },
    body: envelope({ includeAll: true }),
  });
  if (response.status !== 200) throw await errorFrom(response);
  onOpen();
  const reader = response.body.getReader();
  try {
    for await (const { flags, message } of envelopes(reader)) {
      if (flags & END_STREAM) {
        const error = message.error;
        if (error) throw new RpcError(error.code ?? "unknown", error.message ?? "");
        return;
      }
      onWatchEvent(message);
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  throw new RpcError("unavailable", "The live updates stream was cut off.");
}

function onWatchEvent(event) {
  scheduleReload();
  const user = event.user;
  if (!opened || !user || user.id !== opened.id || $("user-page").hidden) return;
  const deleted = event.type === "EVENT_TYPE_DELETED";
  // Our own writes come back as events too; the reply to them updates the etag.
  if (!deleted && user.etag === opened.etag) return;
  // Only a notice: whatever is being typed into the form stays.
  $("changed-text").textContent = deleted
    ? "This user has been deleted since you opened this page."
    : "This user was changed elsewhere since you opened this page. Your form is kept as you " +
      "left it; saving it will report the conflict.";
  $("reload-user").hidden = deleted;
  $("changed-notice").hidden = false;
}

// Re-reads the current page shortly after a burst of events, once.
function scheduleReload() {
  if ($("users-view").hidden) return; // the list is read again when it is shown
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(loadList, 150);
}

function setLive(state) {
  const live = $("live-status");
  live.dataset.state = state;
  const labels = { open: "Live updates on", connecting: "Connecting live updates…", off: "Live updates off" };
  live.textContent = labels[state];
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

// --- Messages ---

function showStatus(text) {
  $("status").textContent = text;
  $("status").scrollIntoView({ block: "nearest" });
}

// `text` is shown as given: for a refusal, the server's own words.
function showAlert(text, detail = "") {
  const alert = $("alert");
  alert.replaceChildren(document.createTextNode(text));
  if (detail) {
    const extra = document.createElement("span");
    extra.className = "detail";
    extra.textContent = detail;
    alert.append(extra);
  }
  alert.scrollIntoView({ block: "nearest" });
}

function showError(error) {
  if (!(error instanceof RpcError)) {
    console.error(error);
    showAlert(`Something went wrong in the console: ${error.message}`);
    return;
  }
  let detail = "";
  if (error.retryAfter) {
    const seconds = /^\d+$/.test(error.retryAfter);
    detail = seconds ? `Try again in ${error.retryAfter} seconds.` : "Try again later.";
  }
  showAlert(error.message, detail);
}

function clearMessages() {
  $("status").textContent = "";
  $("alert").replaceChildren();
}

// Runs one user action with its button disabled, so a double click sends one request.
async function act(button, work, onError = showError) {
  clearMessages();
  button.disabled = true;
  try {
    await work();
  } catch (error) {
    await onError(error);
  } finally {
    button.disabled = false;
  }
}

// --- Formatting ---

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function formatTime(timestamp) {
  if (!timestamp) return "";
  const date = new Date(timestamp);
  if (Number.isNaN(date.getTime())) return timestamp;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

function timeElement(timestamp) {
  const time = document.createElement("time");
  if (timestamp) time.dateTime = timestamp;
  time.title = timestamp ?? "";
  time.textContent = formatTime(timestamp);
  return time;
}

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? "";
  return td;
}

const roleOf = (user) => user.role ?? "USER_ROLE_UNSPECIFIED";
const statusOf = (user) => user.status ?? "USER_STATUS_UNSPECIFIED";

// --- Routing ---

function show(viewId, focusId) {
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== viewId;
  }
  // Move focus to the new view, so keyboard and screen reader users start there.
  $(focusId ?? $(viewId).querySelector("h1").id).focus();
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function route() {
  $("alert").replaceChildren();
  if (!session) return show("login-view", "username");
  if (!isStaff()) return show("not-staff-view");
  const hash = location.hash;
  const match = /^#\/users\/([^/]+)$/.exec(hash);
  if (match) {
    let id;
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      id = "";
    }
    return openUser(id);
  }
  if (hash === "#/create" && isAdmin()) return show("create-view");
  if (hash !== "#/users") history.replaceState(null, "", "#/users");
  showList();
}

// --- Users list ---

function showList() {
  $("create-user").hidden = !isAdmin();
  show("users-view");
  loadList();
}

function resetPaging() {
  Object.assign(list, { token: "", next: "", earlier: [] });
}

async function loadList() {
  clearTimeout(reloadTimer);
  const seq = ++list.seq;
  const request = { pageSize: PAGE_SIZE };
  if (list.token) request.pageToken = list.token;
  if (list.query) request.query = list.query;
  if (list.role) request.roleFilter = list.role;
  if (list.status) request.statusFilter = list.status;
  try {
    const reply = await call(`${USERS}ListUsers`, request);
    if (seq === list.seq) renderList(reply, request.query);
  } catch (error) {
    if (seq === list.seq) showError(error);
  }
}

function renderList(reply, query) {
  const users = reply.users ?? [];
  $("users-body").replaceChildren(...users.map(userRow));
  $("no-users").hidden = users.length > 0;
  const total = reply.totalCount ?? 0;
  // With a query the server counts matches only up to 100.
  const text = query && total >= 100 ? "100 or more users" : plural(total, "user");
  if ($("total-count").textContent !== text) $("total-count").textContent = text;
  list.next = reply.nextPageToken ?? "";
  $("next-page").disabled = list.next === "";
  $("prev-page").disabled = list.earlier.length === 0;
  $("page-number").textContent = `Page ${list.earlier.length + 1}`;
}

function userRow(user) {
  const link = document.createElement("a");
  link.href = `#/users/${encodeURIComponent(user.id)}`;
  link.textContent = user.username;
  const row = document.createElement("tr");
  row.dataset.userId = user.id;
  row.append(
    cell(link),
    cell(user.email),
    cell(user.fullName),
    cell(ROLE_LABELS[roleOf(user)] ?? roleOf(user)),
    cell(STATUS_LABELS[statusOf(user)] ?? statusOf(user)),
    cell(timeElement(user.updatedAt)),
  );
  return row;
}

let searchTimer = 0;

function onFiltersChanged() {
  clearTimeout(searchTimer);
  const query = $("search").value.trim();
  const role = $("role-filter").value;
  const status = $("status-filter").value;
  if (query === list.query && role === list.role && status === list.status) return;
  Object.assign(list, { query, role, status });
  resetPaging(); // page tokens are bound to the filters they were made with
  loadList();
}

// --- User page ---

function rightsOver(user) {
  const admin = isAdmin();
  const self = user.id === session.user.id;
  return {
    edit: admin || self,
    editRole: admin,
    // Not offered on your own page: suspending or deleting yourself locks you out.
    status: !self && (admin || roleOf(user) === ROLE_USER),
    remove: admin && !self,
    endSessions: admin || self,
    // Your own password needs the current one, which this page does not ask for.
    setPassword: admin && !self,
    secondFactor: self,
  };
}

async function openUser(id) {
  const seq = ++pageSeq;
  opened = null;
  $("user-title").textContent = "Loading user…";
  for (const part of ["changed-notice", "delete-confirm", "edit-form", "password-form", "second-factor"]) {
    $(part).hidden = true;
  }
  // A new page starts the second factor section afresh: nothing half-enrolled shows.
  $("enroll-totp-form").hidden = false;
  $("enrollment").hidden = true;
  $("recovery-box").hidden = true;
  for (const button of $("actions").querySelectorAll("button")) button.hidden = true;
  renderDetails({});
  show("user-page");
  try {
    const reply = await call(`${USERS}GetUser`, { userId: id });
    if (seq !== pageSeq) return; // another page was opened meanwhile
    opened = reply.user;
    renderUser();
    fillForm();
  } catch (error) {
    if (seq !== pageSeq) return;
    $("user-title").textContent = "User not available";
    showError(error);
  }
}

// Reads the open user again after a conflict and shows the values the server has now.
async function reloadOpened() {
  const seq = pageSeq;
  const reply = await call(`${USERS}GetUser`, { userId: opened.id });
  if (seq !== pageSeq) return;
  opened = reply.user;
  renderUser();
  fillForm();
}

function renderDetails(user) {
  $("field-id").textContent = user.id ?? "";
  $("field-username").textContent = user.username ?? "";
  $("field-email").textContent = user.email ?? "";
  $("field-full-name").textContent = user.fullName ?? "";
  $("field-role").textContent = user.id ? ROLE_LABELS[roleOf(user)] ?? roleOf(user) : "";
  $("field-role").dataset.value = user.id ? roleOf(user) : "";
  $("field-status").textContent = user.id ? STATUS_LABELS[statusOf(user)] ?? statusOf(user) : "";
  $("field-status").dataset.value = user.id ? statusOf(user) : "";
  $("field-created").replaceChildren(timeElement(user.createdAt));
  $("field-updated").replaceChildren(timeElement(user.updatedAt));
  $("field-etag").textContent = user.etag ?? "";

  const entries = Object.entries(user.metadata ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const items = entries.flatMap(([key, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = value;
    return [dt, dd];
  });
  $("metadata-list").replaceChildren(...items);
  $("no-metadata").hidden = entries.length > 0 || !user.id;
}

// Shows the open user and offers only what the signed-in role may do to them.
function renderUser() {
  const user = opened;
  const rights = rightsOver(user);
  $("user-title").textContent = user.username;
  renderDetails(user);
  $("changed-notice").hidden = true; // what is shown is now the server's latest
  $("suspend").hidden = !rights.status || statusOf(user) === SUSPENDED;
  $("reactivate").hidden = !rights.status || statusOf(user) === ACTIVE;
  $("end-sessions").hidden = !rights.endSessions;
  $("delete").hidden = !rights.remove;
  $("delete-confirm").hidden = true;
  $("edit-form").hidden = !rights.edit;
  $("edit-role-field").hidden = !rights.editRole;
  $("password-form").hidden = !rights.setPassword;
  $("second-factor").hidden = !rights.secondFactor;
}

function fillForm() {
  $("edit-username").value = opened.username ?? "";
  $("edit-email").value = opened.email ?? "";
  $("edit-full-name").value = opened.fullName ?? "";
  $("edit-role").value = roleOf(opened);
  $("edit-metadata").value = Object.entries(opened.metadata ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, value]) => `${key}=${value}`)
    .join("\n");
}

// A Map, not an object, so keys such as "__proto__" or "constructor" are plain keys.
function parseMetadata(text) {
  const entries = new Map();
  for (const [index, line] of text.split("\n").entries()) {
    if (line.trim() === "") continue;
    const at = line.indexOf("=");
    if (at < 0) throw new Error(`Metadata line ${index + 1} has no "=": write it as key=value.`);
    entries.set(line.slice(0, at).trim(), line.slice(at + 1).trim());
  }
  return entries;
}

// The request sends only what changed, plus the etag the page was loaded with.
function buildUpdate() {
  const request = { userId: opened.id, etag: opened.etag };
  const fields = { username: "edit-username", email: "edit-email", fullName: "edit-full-name" };
  for (const [name, id] of Object.entries(fields)) {
    const value = $(id).value.trim();
    if (value !== (opened[name] ?? "")) request[name] = value;
  }
  if (rightsOver(opened).editRole && $("edit-role").value !== roleOf(opened)) {
    request.role = $("edit-role").value;
  }
  const before = new Map(Object.entries(opened.metadata ?? {}));
  let after;
  try {
    after = parseMetadata($("edit-metadata").value);
  } catch (error) {
    return { problem: error.message };
  }
  const changes = [];
  for (const [key, value] of after) {
    if (before.get(key) !== value) changes.push([key, value]);
  }
  for (const key of before.keys()) {
    if (!after.has(key)) changes.push([key, ""]); // an empty value removes the key
  }
  if (changes.length > 0) request.metadata = Object.fromEntries(changes);
  return { request };
}

// A write from the user page failed. A conflict shows the server's current values; any
// other refusal is shown as the server worded it.
async function onWriteError(error) {
  if (!(error instanceof RpcError) || error.code !== "aborted" || !opened) return showError(error);
  showAlert(CONFLICT_TEXT, `The server said: ${error.message}`);
  try {
    await reloadOpened();
  } catch (reloadError) {
    showError(reloadError);
  }
}

function onSave(event) {
  event.preventDefault();
  if (!opened) return;
  act($("save"), async () => {
    const { request, problem } = buildUpdate();
    if (problem) return showAlert(problem);
    const changed = Object.keys(request).length > 2; // more than userId and etag
    if (!changed) return showStatus("Nothing changed, so nothing was saved.");
    const reply = await call(`${USERS}UpdateUser`, request);
    opened = reply.user;
    if (opened.id === session?.user.id) {
      // The header shows the signed-in user's name, which may just have changed.
      session.user = opened;
      showSessionInfo();
    }
    renderUser();
    fillForm();
    showStatus(`Saved ${opened.username}.`);
  }, onWriteError);
}

function setStatus(status, button) {
  if (!opened) return;
  act(button, async () => {
    const reply = await call(`${USERS}UpdateUser`, { userId: opened.id, etag: opened.etag, status });
    opened = reply.user;
    renderUser(); // the edit form keeps whatever is being typed
    showStatus(`${status === SUSPENDED ? "Suspended" : "Reactivated"} ${opened.username}.`);
    // The clicked button is gone now; keep keyboard focus on the page's actions.
    const other = status === SUSPENDED ? $("reactivate") : $("suspend");
    if (!other.hidden) other.focus();
  }, onWriteError);
}

function askDelete() {
  $("delete-question").textContent = `Delete ${opened.username}? This cannot be undone.`;
  $("delete-confirm").hidden = false;
  $("cancel-delete").focus();
}

function cancelDelete() {
  $("delete-confirm").hidden = true;
  $("delete").focus();
}

function confirmDelete() {
  if (!opened) return;
  act($("confirm-delete"), async () => {
    const { id, etag, username } = opened;
    await call(`${USERS}DeleteUser`, { userId: id, etag });
    opened = null;
    go("#/users");
    showStatus(`Deleted ${username}.`);
  }, onWriteError);
}

function endSessions() {
  if (!opened) return;
  act($("end-sessions"), async () => {
    const { id, username } = opened;
    const reply = await call(`${AUTH}EndSessions`, { userId: id });
    const ended = Number(reply.ended ?? 0); // an int64: a string, absent when 0
    if (id === session?.user.id) {
      // This console's own session was one of them.
      endSession();
      showStatus(`Ended ${plural(ended, "session")}, including this one. Sign in again to continue.`);
    } else {
      showStatus(`Ended ${plural(ended, "session")} of ${username}.`);
    }
  });
}

function onSetPassword(event) {
  event.preventDefault();
  if (!opened) return;
  act($("set-password"), async () => {
    const { id, username } = opened;
    await call(`${AUTH}ChangePassword`, { userId: id, newPassword: $("new-password").value });
    $("new-password").value = "";
    showStatus(`Password set for ${username}. Every session they had has ended.`);
  });
}

// --- Create user ---

function onCreate(event) {
  event.preventDefault();
  act($("create-submit"), async () => {
    const reply = await call(`${USERS}CreateUser`, {
      username: $("create-username").value.trim(),
      email: $("create-email").value.trim(),
      fullName: $("create-full-name").value.trim(),
      password: $("create-password").value,
      role: $("create-role").value,
    });
    $("create-form").reset();
    go(`#/users/${encodeURIComponent(reply.user.id)}`);
    showStatus(`Created ${reply.user.username}.`);
  });
}

// --- Second factor ---

function onEnrollTotp(event) {
  event.preventDefault();
  act($("enroll-totp"), async () => {
    const reply = await call(`${AUTH}EnrollTotp`, { currentPassword: $("enroll-password").value });
    $("enroll-password").value = "";
    $("totp-qr").src = `data:image/svg+xml;base64,${btoa(reply.qrCodeSvg)}`;
    $("totp-secret").textContent = reply.secret;
    $("recovery-box").hidden = true;
    $("enrollment").hidden = false;
    $("totp-code").focus();
  });
}

function onConfirmTotp(event) {
  event.preventDefault();
  act($("confirm-totp"), async () => {
    const reply = await call(`${AUTH}ConfirmTotp`, { code: $("totp-code").value.trim() });
    $("totp-code").value = "";
    $("enrollment").hidden = true;
    const items = (reply.recoveryCodes ?? []).map((code) => {
      const item = document.createElement("li");
      item.textContent = code;
      return item;
    });
    $("recovery-codes").replaceChildren(...items);
    $("recovery-box").hidden = false;
    $("enroll-totp-form").hidden = true;
    showStatus("The second factor is on.");
  });
}

// --- Sign in and out ---

function onLogin(event) {
  event.preventDefault();
  act($("sign-in"), async () => {
    const body = { username: $("username").value.trim(), password: $("password").value };
    if (!$("second-factor-field").hidden) body.secondFactorCode = $("second-factor-code").value.trim();
    let reply;
    try {
      reply = await call(`${AUTH}Login`, body, { auth: false });
    } catch (error) {
      // The password was right and the account has a second factor: ask for its code.
      if (error.code === "failed_precondition" && $("second-factor-field").hidden) {
        $("second-factor-field").hidden = false;
        $("second-factor-code").focus();
        showStatus("Enter the code from your authenticator app, or a recovery code.");
        return;
      }
      throw error;
    }
    $("password").value = "";
    $("second-factor-code").value = "";
    $("second-factor-field").hidden = true;
    startSession(reply);
    startWatch();
    go(location.hash.startsWith("#/") && location.hash !== "#/" ? location.hash : "#/users");
  });
}

function signOut() {
  act($("sign-out"), async () => {
    try {
      await call(`${AUTH}Logout`);
    } catch {
      // The tokens are forgotten below either way; an unreachable server cannot use them.
    }
    endSession();
    showStatus("Signed out.");
  });
}

// --- Start ---

async function loadServerInfo() {
  try {
    const response = await fetch("server.json", { cache: "no-store" });
    if (!response.ok) return;
    const info = await response.json();
    $("dev-banner").hidden = info.developmentKey !== true;
  } catch {
    // Without the information there is no banner; the console works the same.
  }
}

function wire() {
  // The route lives in the hash, so the skip link moves focus itself instead of setting "#main".
  document.querySelector(".skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    $("main").focus();
  });
  $("login-form").addEventListener("submit", onLogin);
  $("sign-out").addEventListener("click", signOut);
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    onFiltersChanged();
  });
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(onFiltersChanged, 250);
  });
  $("role-filter").addEventListener("change", onFiltersChanged);
  $("status-filter").addEventListener("change", onFiltersChanged);
  $("next-page").addEventListener("click", () => {
    if (!list.next) return;
    list.earlier.push(list.token);
    list.token = list.next;
    loadList();
  });
  $("prev-page").addEventListener("click", () => {
    list.token = list.earlier.pop() ?? "";
    loadList();
  });
  $("edit-form").addEventListener("submit", onSave);
  $("reload-user").addEventListener("click", () => act($("reload-user"), reloadOpened));
  $("suspend").addEventListener("click", () => setStatus(SUSPENDED, $("suspend")));
  $("reactivate").addEventListener("click", () => setStatus(ACTIVE, $("reactivate")));
  $("delete").addEventListener("click", askDelete);
  $("cancel-delete").addEventListener("click", cancelDelete);
  $("confirm-delete").addEventListener("click", confirmDelete);
  $("end-sessions").addEventListener("click", endSessions);
  $("password-form").addEventListener("submit", onSetPassword);
  $("create-form").addEventListener("submit", onCreate);
  $("enroll-totp-form").addEventListener("submit", onEnrollTotp);
  $("confirm-totp-form").addEventListener("submit", onConfirmTotp);
  window.addEventListener("hashchange", route);
}

wire();
loadServerInfo();
route();
