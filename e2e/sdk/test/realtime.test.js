// The official @directus/sdk realtime client against a realtime endpoint: the broker's
// /realtime or Directus's own /websocket (REALTIME_URL). REST writes and logins go to Directus
// (DIRECTUS_URL). Every test must pass against both: they test the protocol, not a server.
// Run by scripts/sdk-test.sh, which starts everything and sets the environment.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { exec } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { createItem, deleteItem, updateItem } from '@directus/sdk';
import WebSocket from 'ws';

import { COLLECTION, PRIVATE_COLLECTION, RESTRICTED_TOKEN, ensureFixture } from '../fixture.js';
import { Inbox, admin, drain, env, listen, sessionClient, staticClient, tag } from '../lib.js';

const isInit = (m) => m.type === 'subscription' && m.event === 'init';
const ofEvent = (event, uid) => (m) => m.type === 'subscription' && m.event === event && (uid === undefined || m.uid === uid);

before(async () => {
  assert.ok(env.realtimeUrl, 'REALTIME_URL must be set');
  await ensureFixture();
});

test('handshake auth with a static token', async (t) => {
  const client = staticClient();
  t.after(() => client.disconnect());
  const socket = listen(client, 'socket');
  // connect() resolves only when the first frame the server sends is {"type":"auth","status":"ok"}.
  await client.connect();
  assert.equal(await client.isConnected(), true);
  client.sendMessage({ type: 'ping', uid: 'p1' });
  await socket.take((m) => m.type === 'pong' && m.uid === 'p1', 5000, 'the pong');
});

// The auth frames the SDK does not send itself, on a plain socket: a login and a refresh answer
// with the new refresh token (and nothing else), a refused token closes the socket.
test('auth frames with email/password and refresh_token', async (t) => {
  const ws = new WebSocket(env.realtimeUrl);
  t.after(() => ws.close());
  const inbox = new Inbox('socket');
  ws.on('message', (data) => inbox.push(JSON.parse(data.toString())));
  await once(ws, 'open');
  const send = (m) => ws.send(JSON.stringify(m));
  const auth = (uid) => inbox.take((m) => m.type === 'auth' && m.uid === uid, 10000, `the auth answer ${uid}`);

  send({ type: 'auth', email: env.adminEmail, password: env.adminPassword, uid: 'login' });
  const login = await auth('login');
  assert.deepEqual(Object.keys(login).sort(), ['refresh_token', 'status', 'type', 'uid']);
  assert.equal(login.status, 'ok');

  send({ type: 'auth', refresh_token: login.refresh_token, uid: 'refresh' });
  const refreshed = await auth('refresh');
  assert.equal(refreshed.status, 'ok');
  assert.equal(typeof refreshed.refresh_token, 'string');
  assert.notEqual(refreshed.refresh_token, login.refresh_token);

  send({ type: 'ping', uid: 7 });
  send({ type: 'no-such-type', uid: 'ignored' });
  send({ type: 'ping' });
  assert.deepEqual(await inbox.take((m) => m.type === 'pong'), { type: 'pong', uid: 7 });
  assert.deepEqual(await inbox.take((m) => m.type === 'pong'), { type: 'pong' });
  assert.equal(inbox.messages.length, 0, `unknown types get no answer: ${JSON.stringify(inbox.messages)}`);

  send({ type: 'auth', access_token: 'not-a-token', uid: 'bad' });
  const bad = await auth('bad');
  assert.equal(bad.status, 'error');
  assert.equal(bad.error.code, 'AUTH_FAILED');
  await once(ws, 'close');
});

test('handshake: a first frame that is not auth fails the handshake', async (t) => {
  const ws = new WebSocket(env.realtimeUrl);
  t.after(() => ws.close());
  const inbox = new Inbox('socket');
  ws.on('message', (data) => inbox.push(JSON.parse(data.toString())));
  await once(ws, 'open');
  ws.send(JSON.stringify({ type: 'subscribe', collection: COLLECTION, uid: 's' }));
  const f = await inbox.take(() => true, 10000, 'the handshake failure');
  assert.deepEqual([f.type, f.status, f.error.code], ['auth', 'error', 'AUTH_FAILED']);
  await once(ws, 'close');
});

test('subscribe() with a query: init, then create, update and delete from REST writes', async (t) => {
  const client = staticClient();
  t.after(() => client.disconnect());
  const tg = tag('sub');
  const existing = await admin.request(createItem(COLLECTION, { title: 'existing', status: 'draft', tag: tg }));
  const { subscription } = await client.subscribe(COLLECTION, {
    query: { fields: ['id', 'title', 'status'], filter: { tag: { _eq: tg } }, sort: ['id'], limit: 10 },
  });
  const events = drain(subscription, 'subscription');

  const init = await events.take(isInit, 15000, 'init');
  assert.deepEqual(init.data, [{ id: existing.id, title: 'existing', status: 'draft' }]);

  const created = await admin.request(createItem(COLLECTION, { title: 'created', status: 'draft', tag: tg, secret: 's' }));
  const c = await events.take(ofEvent('create'), 15000, 'the create');
  assert.deepEqual(c.data, [{ id: created.id, title: 'created', status: 'draft' }]);

  await admin.request(updateItem(COLLECTION, created.id, { title: 'updated' }));
  const u = await events.take(ofEvent('update'), 15000, 'the update');
  assert.deepEqual(u.data, [{ id: created.id, title: 'updated', status: 'draft' }]);

  await admin.request(deleteItem(COLLECTION, created.id));
  const d = await events.take(ofEvent('delete'), 15000, 'the delete');
  assert.deepEqual(d.data.map(String), [String(created.id)]);
});

test('unsubscribe() stops the events of that subscription only', async (t) => {
  const client = staticClient();
  t.after(() => client.disconnect());
  const socket = listen(client, 'socket');
  const tg = tag('unsub');
  const query = { filter: { tag: { _eq: tg } } };
  const optsA = { query };
  const optsB = { query };
  const a = await client.subscribe(COLLECTION, optsA);
  const b = await client.subscribe(COLLECTION, optsB);
  const eventsB = drain(b.subscription, 'b');
  // Both inits from the socket: the SDK's generator only hears what comes
  // while a next() is pending, and b's init can come before the first one
  // (seen against Directus itself).
  await socket.take((m) => isInit(m) && m.uid === optsA.uid, 15000, 'init of a');
  await socket.take((m) => isInit(m) && m.uid === optsB.uid, 15000, 'init of b');

  a.unsubscribe();
  await socket.take(ofEvent('unsubscribe', optsA.uid), 15000, 'the unsubscribe answer');
  const created = await admin.request(createItem(COLLECTION, { title: 'after unsubscribe', tag: tg }));
  const c = await eventsB.take(ofEvent('create'), 15000, 'the create for b');
  assert.equal(c.data[0].id, created.id);
  await socket.none(ofEvent('create', optsA.uid), 500, 'event for the unsubscribed a');
});

test('CRUD via sendMessage({type: "items"})', async (t) => {
  const client = staticClient();
  t.after(() => client.disconnect());
  const socket = listen(client, 'socket');
  await client.connect();
  const tg = tag('crud');
  const answer = (uid) => socket.take((m) => m.type === 'items' && m.uid === uid, 15000, `the answer ${uid}`);

  client.sendMessage({ type: 'items', action: 'create', collection: COLLECTION, data: { title: 'via ws', tag: tg }, uid: 'c1' });
  const created = await answer('c1');
  assert.equal(created.status, undefined, JSON.stringify(created));
  assert.equal(created.data.title, 'via ws');
  const id = created.data.id;

  client.sendMessage({ type: 'items', action: 'read', collection: COLLECTION, id, query: { fields: ['title'] }, uid: 'r1' });
  assert.deepEqual((await answer('r1')).data, { title: 'via ws' });

  client.sendMessage({ type: 'items', action: 'update', collection: COLLECTION, id, data: { title: 'changed via ws' }, uid: 'u1' });
  assert.equal((await answer('u1')).data.title, 'changed via ws');

  client.sendMessage({ type: 'items', action: 'read', collection: COLLECTION, query: { filter: { tag: { _eq: tg } }, fields: ['id', 'title'] }, uid: 'r2' });
  assert.deepEqual((await answer('r2')).data, [{ id, title: 'changed via ws' }]);

  client.sendMessage({ type: 'items', action: 'delete', collection: COLLECTION, id, uid: 'd1' });
  assert.equal((await answer('d1')).data, id);

  client.sendMessage({ type: 'items', action: 'read', collection: 'directus_users', uid: 'e1' });
  const err = await answer('e1');
  assert.equal(err.status, 'error');
  assert.equal(err.error.code, 'INVALID_COLLECTION');
});

test('a restricted role receives only what it may read', async (t) => {
  const restricted = staticClient(RESTRICTED_TOKEN);
  const full = staticClient();
  t.after(() => {
    restricted.disconnect();
    full.disconnect();
  });
  const tg = tag('perm');
  const query = { filter: { tag: { _eq: tg } } };
  const mine = drain((await restricted.subscribe(COLLECTION, { query })).subscription, 'restricted');
  const all = drain((await full.subscribe(COLLECTION, { query })).subscription, 'admin');
  assert.deepEqual((await mine.take(isInit)).data, []);
  await all.take(isInit);

  const draft = await admin.request(createItem(COLLECTION, { title: 'draft', status: 'draft', secret: 'hidden', tag: tg }));
  const published = await admin.request(createItem(COLLECTION, { title: 'published', status: 'published', secret: 'hidden', tag: tg }));
  await all.take((m) => m.event === 'create' && m.data[0].id === draft.id, 15000, 'the draft for admin');
  await all.take((m) => m.event === 'create' && m.data[0].id === published.id, 15000, 'the published item for admin');

  const c = await mine.take(ofEvent('create'), 15000, 'the published item');
  assert.deepEqual(c.data, [{ id: published.id, title: 'published', status: 'published', tag: tg }]);

  await admin.request(updateItem(COLLECTION, draft.id, { title: 'draft 2' }));
  await admin.request(updateItem(COLLECTION, published.id, { title: 'published 2' }));
  const u = await mine.take(ofEvent('update'), 15000, 'the update of the published item');
  assert.deepEqual(u.data, [{ id: published.id, title: 'published 2', status: 'published', tag: tg }]);
  await mine.none((m) => Array.isArray(m.data) && m.data.some((item) => item.id === draft.id), 300, 'a message about the draft');
});

test('subscribe() throws on a collection the role may not read', async (t) => {
  const client = staticClient(RESTRICTED_TOKEN);
  t.after(() => client.disconnect());
  const { subscription } = await client.subscribe(PRIVATE_COLLECTION);
  await assert.rejects(
    async () => {
      for await (const m of subscription) assert.fail(`unexpected ${JSON.stringify(m)}`);
    },
    (err) => err.type === 'subscribe' && err.status === 'error' && err.error.code === 'FORBIDDEN',
  );
});

test('login session (authentication json): refresh and re-auth on TOKEN_EXPIRED keep the subscription', { skip: !env.tokenTtlMs && 'TOKEN_TTL_MS not set' }, async (t) => {
  const { client, counter } = sessionClient();
  t.after(() => client.disconnect());
  await client.login({ email: env.adminEmail, password: env.adminPassword });
  const socket = listen(client, 'socket');
  const tg = tag('session');
  const { subscription } = await client.subscribe(COLLECTION, { query: { filter: { tag: { _eq: tg } } } });
  const events = drain(subscription, 'subscription');
  await socket.take((m) => m.type === 'auth' && m.status === 'ok', 5000, 'the handshake answer');
  await events.take(isInit);
  const refreshes = counter.refreshes;

  // The server says TOKEN_EXPIRED when the token's exp passes; the SDK refreshes the session over
  // REST and sends {"type":"auth","access_token"} on the same socket.
  await socket.take((m) => m.type === 'auth' && m.status === 'ok', env.tokenTtlMs + 10000, 'the answer to the re-auth');
  assert.ok(counter.refreshes > refreshes, 'the SDK refreshed its session');

  const created = await admin.request(createItem(COLLECTION, { title: 'after re-auth', tag: tg }));
  const c = await events.take(ofEvent('create'), 15000, 'the create after the re-auth');
  assert.equal(c.data[0].id, created.id);
});

test('reconnect after the server restarts, with subscriptions restored', { skip: !env.restartCmd && 'RESTART_CMD not set' }, async (t) => {
  const client = staticClient();
  t.after(() => client.disconnect());
  const socket = listen(client, 'socket');
  const tg = tag('reconnect');
  const opts = { query: { filter: { tag: { _eq: tg } } } };
  await client.subscribe(COLLECTION, opts);
  await socket.take((m) => isInit(m) && m.uid === opts.uid, 15000, 'init');

  await promisify(exec)(env.restartCmd);
  // The SDK reconnects, authenticates and sends its subscriptions again (the server answers each
  // with an init).
  await socket.take((m) => isInit(m) && m.uid === opts.uid, 60000, 'init after the reconnect');
  const created = await admin.request(createItem(COLLECTION, { title: 'after restart', tag: tg }));
  const c = await socket.take((m) => ofEvent('create', opts.uid)(m) && m.data[0].id === created.id, 20000, 'the create after the restart');
  assert.equal(c.data[0].title, 'after restart');
});
