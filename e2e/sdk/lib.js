// Helpers of the SDK suite: configuration from the environment, SDK clients, and an inbox that
// collects messages so tests can wait for the one they expect.
import { authentication, createDirectus, realtime, rest, staticToken } from '@directus/sdk';
import WebSocket from 'ws';

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} must be set (see scripts/sdk-test.sh)`);
  return v;
}

export const env = {
  // The real Directus: REST calls and logins always go there.
  directusUrl: required('DIRECTUS_URL').replace(/\/$/, ''),
  // The realtime endpoint under test: the broker's /realtime or Directus's own /websocket.
  realtimeUrl: process.env.REALTIME_URL ?? '',
  // The GraphQL subscriptions endpoint under test: the broker's /graphql or Directus's own.
  graphqlUrl: process.env.GRAPHQL_URL ?? '',
  target: process.env.TARGET ?? 'unknown',
  adminToken: process.env.ADMIN_TOKEN ?? 'admin-token',
  adminEmail: process.env.ADMIN_EMAIL ?? 'admin@example.com',
  adminPassword: process.env.ADMIN_PASSWORD ?? 'admin-password',
  // ACCESS_TOKEN_TTL of the Directus, in ms: how long a login session's token lives.
  tokenTtlMs: Number(process.env.TOKEN_TTL_MS ?? 0),
  // A shell command that restarts the realtime server under test and returns once it is back.
  restartCmd: process.env.RESTART_CMD ?? '',
  // The SDK's reconnect delay. It must exceed the time the server is down during a restart:
  // @directus/sdk 26.0.0 stops retrying after a failed attempt (the close of the failed socket
  // calls reconnect() while the first reconnect is still marked active, and that call's promise
  // never settles). The broker restarts in well under a second; Directus takes about 10 s.
  reconnectDelayMs: Number(process.env.RECONNECT_DELAY_MS ?? 1000),
};

// Node 20 has no global WebSocket; the SDK takes one through its globals.
const globals = { WebSocket };

const realtimeConfig = {
  url: env.realtimeUrl,
  authMode: 'handshake',
  reconnect: { delay: env.reconnectDelayMs, retries: 10 },
};

/** A client of the admin's static token: REST to Directus, realtime to the target. */
export function staticClient(token = env.adminToken) {
  return createDirectus(env.directusUrl, { globals }).with(staticToken(token)).with(rest()).with(realtime(realtimeConfig));
}

/** A client of a login session (JSON mode); refreshes counts its calls to /auth/refresh. */
export function sessionClient() {
  const counter = { refreshes: 0 };
  const fetchCounting = (url, init) => {
    if (String(url).endsWith('/auth/refresh')) counter.refreshes++;
    return fetch(url, init);
  };
  const client = createDirectus(env.directusUrl, { globals: { ...globals, fetch: fetchCounting } })
    .with(authentication('json'))
    .with(rest())
    .with(realtime(realtimeConfig));
  return { client, counter };
}

/** A REST-only admin client. */
export const admin = createDirectus(env.directusUrl).with(staticToken(env.adminToken)).with(rest());

/**
 * Inbox collects messages (from a subscription generator or a socket listener) and lets a test
 * wait for the first one that matches, in arrival order. Each message is taken once.
 */
export class Inbox {
  constructor(name) {
    this.name = name;
    this.messages = [];
    this.waiters = new Set();
    this.error = null;
  }

  push(m) {
    this.messages.push(m);
    for (const w of this.waiters) w();
  }

  fail(err) {
    this.error = err;
    for (const w of this.waiters) w();
  }

  /** Resolves with the first message matching pred; rejects after ms with what did arrive. */
  take(pred, ms = 15000, what = 'a matching message') {
    return new Promise((resolve, reject) => {
      const check = () => {
        const i = this.messages.findIndex(pred);
        if (i >= 0) {
          done();
          resolve(this.messages.splice(i, 1)[0]);
          return true;
        }
        if (this.error) {
          done();
          reject(new Error(`${this.name}: ended with ${JSON.stringify(this.error)} while waiting for ${what}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no ${what} within ${ms} ms; got ${JSON.stringify(this.messages)}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      if (!check()) this.waiters.add(check);
    });
  }

  /** Fails if a message matching pred is (or was) received within ms. */
  async none(pred, ms, what) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const m = this.messages.find(pred);
      if (m) throw new Error(`${this.name}: unexpected ${what}: ${JSON.stringify(m)}`);
      await sleep(50);
    }
  }
}

/**
 * drain pulls a subscription generator in the background into an inbox: the SDK's generator only
 * listens while a next() is pending, so a test that awaits a REST write first would lose events.
 */
export function drain(subscription, name) {
  const inbox = new Inbox(name);
  (async () => {
    try {
      for await (const m of subscription) inbox.push(m);
      inbox.fail('the end of the subscription');
    } catch (err) {
      inbox.fail(err);
    }
  })();
  return inbox;
}

/** Every message the client's sockets receive, parsed (across reconnects). */
export function listen(client, name) {
  const inbox = new Inbox(name);
  client.onWebSocket('message', (m) => inbox.push(m));
  return inbox;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A tag unique to one test, to tell its items apart from every other test's. */
export function tag(name) {
  return `${name}-${env.target}-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
}
