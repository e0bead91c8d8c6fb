// The real server through the official Connect clients: the same suite over Connect JSON on
// HTTP/1.1, Connect binary on HTTP/2 (h2c, prior knowledge) and gRPC-Web on HTTP/1.1.
//
// The harness that starts the server sets:
//   USER_SERVICE_URL          the server's base URL (plaintext; HTTP/1.1 and h2c)
//   USER_SERVICE_ADMIN_TOKEN  a bearer token with admin rights
//   USER_SERVICE_DESCRIPTORS  a binary google.protobuf.FileDescriptorSet of schema/user.proto
//
// Run: node --test tests/web/connect.test.mjs

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import { describe, after, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";

import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  Http2SessionManager,
  createConnectTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

function setting(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: these tests need a running server (see the top of this file)`);
  return value;
}

const baseUrl = setting("USER_SERVICE_URL");
const adminToken = setting("USER_SERVICE_ADMIN_TOKEN");
const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(setting("USER_SERVICE_DESCRIPTORS"))),
);

function service(typeName) {
  const found = registry.getService(typeName);
  if (!found) throw new Error(`the descriptor set has no service ${typeName}`);
  return found;
}
const UserService = service("userservice.UserService");
const AuthService = service("userservice.AuthService");

/** The number of an enum value, by its name in schema/user.proto. */
function enumNumber(enumName, valueName) {
  const value = registry.getEnum(enumName)?.values.find((v) => v.name === valueName);
  if (!value) throw new Error(`the descriptor set has no ${enumName}.${valueName}`);
  return value.number;
}
const ROLE_USER = enumNumber("userservice.UserRole", "USER_ROLE_USER");
const ROLE_MODERATOR = enumNumber("userservice.UserRole", "USER_ROLE_MODERATOR");
const STATUS_ACTIVE = enumNumber("userservice.UserStatus", "USER_STATUS_ACTIVE");
const EVENT_CREATED = enumNumber("userservice.EventType", "EVENT_TYPE_CREATED");

const PASSWORD = "correct-horse-battery-9";
const NEW_PASSWORD = "correct-horse-battery-10";
const UNKNOWN_ID = "00000000-0000-7000-8000-000000000000";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// Each variant builds a transport from interceptors and the connections of its describe block.
const variants = [
  {
    name: "Connect JSON over HTTP/1.1",
    tag: "j",
    transport: (interceptors, conns) =>
      createConnectTransport({
        baseUrl, httpVersion: "1.1", useBinaryFormat: false, interceptors,
        nodeOptions: { agent: conns.agent },
      }),
  },
  {
    name: "Connect binary over HTTP/2 (h2c)",
    tag: "b",
    transport: (interceptors, conns) =>
      createConnectTransport({
        baseUrl, httpVersion: "2", useBinaryFormat: true, interceptors,
        sessionManager: conns.session,
      }),
  },
  {
    name: "gRPC-Web over HTTP/1.1",
    tag: "w",
    transport: (interceptors, conns) =>
      createGrpcWebTransport({
        baseUrl, httpVersion: "1.1", useBinaryFormat: true, interceptors,
        nodeOptions: { agent: conns.agent },
      }),
  },
];

/** An interceptor sending `token` as the bearer token of every call. */
const bearer = (token) => (next) => (req) => {
  req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

/** Awaits `call`, which must fail with `code`; returns the ConnectError. */
async function expectError(call, code, what) {
  let error;
  try {
    await call;
  } catch (err) {
    error = err;
  }
  assert.ok(error !== undefined, `${what}: succeeded, expected ${Code[code]}`);
  assert.ok(error instanceof ConnectError, `${what}: expected a ConnectError, got ${error}`);
  assert.equal(error.code, code, `${what}: expected ${Code[code]}, got ${Code[error.code]}: ${error.rawMessage}`);
  return error;
}

/**
 * Runs a call that the login limit counts (Login, ChangePassword), waiting out
 * RESOURCE_EXHAUSTED: the suite makes more attempts than the default allowance of one address.
 */
async function withinLoginLimit(call) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof ConnectError) || err.code !== Code.ResourceExhausted || attempt === 6) throw err;
      const seconds = Number(err.metadata.get("retry-after")) || 6;
      await delay(Math.min(seconds, 15) * 1000 + 250);
    }
  }
}

/** A WatchUsers stream collecting its events in the background. */
function watch(users, request) {
  const abort = new AbortController();
  const stream = { events: [], header: undefined, ended: undefined };
  let headerArrived;
  const header = new Promise((resolve) => (headerArrived = resolve));
  const onHeader = (h) => {
    stream.header = h;
    headerArrived();
  };
  const reading = (async () => {
    try {
      for await (const event of users.watchUsers(request, { signal: abort.signal, onHeader })) {
        stream.events.push(event);
      }
      stream.ended = new Error("the server ended the stream");
    } catch (err) {
      stream.ended = err;
    }
  })();
  // The response headers come once the server has subscribed; 2 s in case they come later.
  stream.ready = Promise.race([header, delay(2000)]);
  stream.until = async (predicate, what, ms = 5000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = stream.events.find(predicate);
      if (found) return found;
      if (stream.ended) assert.fail(`${what}: the stream ended first: ${stream.ended.message}`);
      if (Date.now() > deadline) assert.fail(`${what}: not within ${ms} ms (${stream.events.length} other events)`);
      await delay(20);
    }
  };
  stream.stop = async () => {
    abort.abort();
    await reading;
  };
  return stream;
}

/** Every page of a ListUsers call: the user ids in order, the page count, the first total. */
async function listAll(users, request) {
  const ids = [];
  let pages = 0;
  let totalCount;
  let pageToken = "";
  do {
    const page = await users.listUsers({ ...request, pageToken });
    assert.ok(page.users.length <= (request.pageSize || 10), `ListUsers page ${pages} holds more than pageSize users`);
    ids.push(...page.users.map((u) => u.id));
    totalCount ??= page.totalCount;
    pageToken = page.nextPageToken;
    pages += 1;
    assert.ok(pages <= 100, "ListUsers kept answering a next_page_token after 100 pages");
  } while (pageToken !== "");
  return { ids, pages, totalCount };
}

for (const variant of variants) {
  describe(`user-service through ${variant.name}`, () => {
    // Usernames: up to 30 ASCII letters, digits or '_'. The prefix is unique per block and run.
    const prefix = `cw${variant.tag}${randomBytes(4).toString("hex")}`;
    const conns = {
      agent: new http.Agent({ keepAlive: true }),
      session: new Http2SessionManager(baseUrl),
    };
    const clientsFor = (token) => {
      const transport = variant.transport(token ? [bearer(token)] : [], conns);
      return { users: createClient(UserService, transport), auth: createClient(AuthService, transport) };
    };
    const admin = clientsFor(adminToken);
    const anonymous = clientsFor(null);
    /** The users of this block that exist now: id to username. */
    const existing = new Map();
    let alice; // a moderator, for reads and writes
    let bob; // a USER, who logs in
    let session; // bob's latest LoginResponse

    after(async () => {
      conns.session.abort();
      conns.agent.destroy();
    });

    async function createUser(who, fields = {}) {
      const username = `${prefix}_${who}`;
      const { user } = await admin.users.createUser({
        username, email: `${username}@example.com`, fullName: `Test ${who}`,
        password: PASSWORD, role: ROLE_USER, ...fields,
      });
      assert.ok(user, `CreateUser(${username}) answered without a user`);
      existing.set(user.id, username);
      return user;
    }

    test("CreateUser answers the stored user", async () => {
      alice = await createUser("alice", { role: ROLE_MODERATOR, fullName: "Alice Liddell" });
      assert.match(alice.id, UUID, "the new user's id is a UUID");
      assert.equal(alice.username, `${prefix}_alice`, "username as given");
      assert.equal(alice.email, `${prefix}_alice@example.com`, "email as given");
      assert.equal(alice.fullName, "Alice Liddell", "full name as given");
      assert.equal(alice.role, ROLE_MODERATOR, "role as given");
      assert.equal(alice.status, STATUS_ACTIVE, "a new user is ACTIVE");
      assert.ok(alice.etag, "a new user has an etag");
      assert.ok(alice.createdAt, "a new user has created_at");
      const age = Math.abs(Date.now() - timestampDate(alice.createdAt).getTime());
      assert.ok(age < 5 * 60_000, `created_at is now, not ${timestampDate(alice.createdAt).toISOString()}`);
    });

    test("GetUser and LookupUser find the user", async () => {
      const { user } = await admin.users.getUser({ userId: alice.id });
      assert.equal(user?.id, alice.id, "GetUser answers the user asked for");
      assert.equal(user.username, alice.username, "GetUser: same username");
      assert.equal(user.etag, alice.etag, "GetUser: same etag as CreateUser answered");
      const byName = await admin.users.lookupUser({ key: { case: "username", value: alice.username } });
      assert.equal(byName.user?.id, alice.id, "LookupUser by username finds the user");
      const byEmail = await admin.users.lookupUser({ key: { case: "email", value: alice.email.toUpperCase() } });
      assert.equal(byEmail.user?.id, alice.id, "LookupUser by email ignores letter case");
    });

    test("GetUser of an unknown or empty id fails", async () => {
      await expectError(admin.users.getUser({ userId: UNKNOWN_ID }), Code.NotFound, "GetUser of an unknown UUID");
      // docs/api.md: an id of any other shape names no user either: NOT_FOUND too.
      await expectError(admin.users.getUser({ userId: "not-a-uuid" }), Code.NotFound, "GetUser of not-a-uuid");
      const empty = await expectError(admin.users.getUser({ userId: "" }), Code.InvalidArgument, "GetUser of an empty id");
      assert.match(empty.rawMessage, /user_id/, "the INVALID_ARGUMENT message names user_id");
    });

    test("CreateUser refuses a bad email and a taken username", async () => {
      const bad = await expectError(
        admin.users.createUser({ username: `${prefix}_bad`, email: "not-an-email", password: PASSWORD }),
        Code.InvalidArgument, "CreateUser with a bad email",
      );
      assert.match(bad.rawMessage, /email/, "the INVALID_ARGUMENT message names email");
      await expectError(
        admin.users.createUser({ username: alice.username, email: `${prefix}_other@example.com`, password: PASSWORD }),
        Code.AlreadyExists, "CreateUser with a taken username",
      );
    });

    test("UpdateUser applies with the current etag and refuses a stale one", async () => {
      const first = await admin.users.updateUser({ userId: alice.id, fullName: "Alice First", etag: alice.etag });
      assert.equal(first.user?.fullName, "Alice First", "the update with the current etag applied");
      assert.notEqual(first.user.etag, alice.etag, "an update changes the etag");
      await expectError(
        admin.users.updateUser({ userId: alice.id, fullName: "Alice Second", etag: alice.etag }),
        Code.Aborted, "UpdateUser with the old etag",
      );
      const { user } = await admin.users.getUser({ userId: alice.id });
      assert.equal(user.fullName, "Alice First", "the refused update overwrote nothing");
      assert.equal(user.etag, first.user.etag, "the refused update left the etag");
      alice = user;
    });

    test("a call without a token is UNAUTHENTICATED", async () => {
      await expectError(anonymous.users.listUsers({}), Code.Unauthenticated, "ListUsers without a token");
    });

    test("Login gives tokens that act as the user, within a USER's rights", async () => {
      bob = await createUser("bob");
      session = await withinLoginLimit(() => anonymous.auth.login({ username: bob.username, password: PASSWORD }));
      assert.ok(session.accessToken, "Login answers an access token");
      assert.ok(session.refreshToken, "Login answers a refresh token");
      assert.equal(session.user?.id, bob.id, "Login answers the user who logged in");
      const asBob = clientsFor(session.accessToken);
      const { user } = await asBob.users.getUser({ userId: bob.id });
      assert.equal(user?.id, bob.id, "a user reads themselves with their token");
      await expectError(asBob.users.getUser({ userId: alice.id }), Code.PermissionDenied, "a USER reading another user");
    });

    test("Refresh rotates the pair; the old refresh token again ends the session", async () => {
      const next = await anonymous.auth.refresh({ refreshToken: session.refreshToken });
      assert.ok(next.accessToken, "Refresh answers an access token");
      assert.ok(next.refreshToken && next.refreshToken !== session.refreshToken, "Refresh answers a new refresh token");
      const { user } = await clientsFor(next.accessToken).users.getUser({ userId: bob.id });
      assert.equal(user?.id, bob.id, "the refreshed access token works");
      await expectError(anonymous.auth.refresh({ refreshToken: session.refreshToken }), Code.Unauthenticated, "Refresh with a used refresh token");
      await expectError(
        clientsFor(next.accessToken).users.getUser({ userId: bob.id }),
        Code.Unauthenticated, "the access token of a session ended by a reused refresh token",
      );
    });

    test("ChangePassword with the current password retires the old one", async () => {
      const login = await withinLoginLimit(() => anonymous.auth.login({ username: bob.username, password: PASSWORD }));
      const asBob = clientsFor(login.accessToken);
      const changed = await withinLoginLimit(() =>
        asBob.auth.changePassword({ currentPassword: PASSWORD, newPassword: NEW_PASSWORD }));
      assert.ok(changed.login?.accessToken, "changing one's own password answers a new session");
      await expectError(
        withinLoginLimit(() => anonymous.auth.login({ username: bob.username, password: PASSWORD })),
        Code.Unauthenticated, "Login with the replaced password",
      );
      await expectError(asBob.users.getUser({ userId: bob.id }), Code.Unauthenticated, "a token from before the password change");
      session = changed.login;
    });

    test("Logout ends the session of the access token", async () => {
      const asBob = clientsFor(session.accessToken);
      const { user } = await asBob.users.getUser({ userId: bob.id });
      assert.equal(user?.id, bob.id, "the session from ChangePassword works before Logout");
      await asBob.auth.logout({});
      await expectError(asBob.users.getUser({ userId: bob.id }), Code.Unauthenticated, "the access token after Logout");
    });

    test("EndSessions (admin) answers how many sessions it ended", async () => {
      const { ended } = await admin.auth.endSessions({ userId: bob.id });
      assert.equal(typeof ended, "bigint", "EndSessionsResponse.ended is an int64 (bigint)");
      assert.ok(ended >= 0n, `ended is not negative (${ended})`);
    });

    test("BatchGetUsers answers the users in the order asked and the missing apart", async () => {
      const { users, missingIds } = await admin.users.batchGetUsers({ userIds: [bob.id, UNKNOWN_ID, alice.id] });
      assert.deepEqual(users.map((user) => user.id), [bob.id, alice.id], "the users, in the order asked");
      assert.deepEqual(missingIds, [UNKNOWN_ID], "the unknown id, apart");
    });

    test("a service key acts with its role until it is revoked, and is listed without its secret", async () => {
      const { key, secret } = await admin.auth.createServiceKey({ name: `${prefix}-key`, role: ROLE_MODERATOR });
      assert.match(secret, /^usk_/, "the secret is shown once, in the answer");
      const asKey = clientsFor(secret);
      const { user } = await asKey.users.getUser({ userId: alice.id });
      assert.equal(user?.id, alice.id, "a moderator key reads users");
      const { keys } = await admin.auth.listServiceKeys({});
      const listed = keys.find((each) => each.id === key.id);
      assert.ok(listed, "the key is listed");
      assert.ok(!JSON.stringify(keys, (_, v) => (typeof v === "bigint" ? String(v) : v)).includes(secret.slice(37)), "no secret is listed");
      await admin.auth.revokeServiceKey({ keyId: key.id });
      await expectError(asKey.users.getUser({ userId: alice.id }), Code.Unauthenticated, "a revoked key");
    });

    test("StartRecovery answers the same for a real and an unknown login", async () => {
      await anonymous.auth.startRecovery({ login: alice.username });
      await anonymous.auth.startRecovery({ login: `${prefix}_nobody` });
      const clear = await admin.auth.clearLoginFailures({ userId: alice.id });
      assert.equal(typeof clear.failures, "bigint", "ClearLoginFailuresResponse.failures is an int64");
    });

    test("WatchUsers streams a CREATED event live, and replays it from its revision", async () => {
      const live = watch(admin.users, { includeAll: true });
      try {
        await live.ready;
        const eve = await createUser("eve");
        const event = await live.until(
          (e) => e.type === EVENT_CREATED && e.user?.username === eve.username,
          `a CREATED event for ${eve.username}`,
        );
        assert.equal(event.user.id, eve.id, "the event carries the created user");
        assert.equal(typeof event.revision, "bigint", "UserEvent.revision is an int64 (bigint)");
        assert.ok(event.revision > 0n, `the event has a revision (${event.revision})`);
        const start = live.header?.get("x-watch-start-revision");
        assert.ok(start, "the stream's headers name x-watch-start-revision");
        assert.ok(BigInt(start) <= event.revision, `x-watch-start-revision ${start} covers revision ${event.revision}`);

        const replay = watch(admin.users, { includeAll: true, startRevision: event.revision });
        try {
          await replay.until(() => true, `a replay from revision ${event.revision}`);
          const [first] = replay.events;
          assert.equal(first.revision, event.revision, "the replay starts at start_revision");
          assert.equal(first.eventId, event.eventId, "the replay's first event is the live one");
          assert.equal(first.type, EVENT_CREATED, "the replayed event is CREATED");
          assert.equal(first.user?.username, eve.username, "the replayed event carries the user");
        } finally {
          await replay.stop();
        }
      } finally {
        await live.stop();
      }
    });

    test("ListUsers with a query finds this block's users, page by page", async () => {
      await createUser("carol");
      await createUser("dave");
      const expected = [...existing.keys()].sort((a, b) => (existing.get(a) < existing.get(b) ? -1 : 1));

      const all = await listAll(admin.users, { query: prefix, pageSize: 100 });
      assert.deepEqual(new Set(all.ids), new Set(expected), "the query finds exactly this block's users");
      assert.equal(all.totalCount, expected.length, "total_count counts this block's users");

      const single = await listAll(admin.users, { query: prefix, pageSize: 1 });
      assert.equal(new Set(single.ids).size, single.ids.length, "no user comes on two pages");
      assert.ok(single.pages >= expected.length, `pageSize 1 takes a page per user (${single.pages} pages)`);
      // docs/api.md: with a query, users come in byte order of the matched name (here the username).
      assert.deepEqual(single.ids, expected, "the pages walk every user, in username order");
    });

    test("DeleteUser with the etag deletes the user", async () => {
      const carolId = [...existing].find(([, username]) => username === `${prefix}_carol`)?.[0];
      assert.ok(carolId, "carol was created by the ListUsers test");
      const { user } = await admin.users.getUser({ userId: carolId });
      const { success } = await admin.users.deleteUser({ userId: carolId, etag: user.etag });
      assert.equal(success, true, "DeleteUser answers success");
      existing.delete(carolId);
      await expectError(admin.users.getUser({ userId: carolId }), Code.NotFound, "GetUser of a deleted user");
      const { totalCount } = await admin.users.listUsers({ query: prefix });
      assert.equal(totalCount, existing.size, "the deleted user no longer counts");
    });
  });
}
