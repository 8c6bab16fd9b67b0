// Creates what the suite needs in a Directus (idempotent), through its REST API as admin:
//   sdk_articles  (id, title, status, secret, tag)  the collection the tests write and watch
//   sdk_private   (id, title)                       a collection the restricted role may not read
//   gql_countries (id, name)                        the GraphQL suite's plain collection
//   gql_states    (id, name, country_id → gql_countries, many-to-one)
//   a role "sdk-published" reading only published sdk_articles, without "secret", and a user of
//   that role with the static token RESTRICTED_TOKEN.
// Run as a script (node fixture.js) before the Flow is installed: the Flow names its collections.
import { env } from './lib.js';

export const COLLECTION = 'sdk_articles';
export const PRIVATE_COLLECTION = 'sdk_private';
export const RESTRICTED_TOKEN = 'sdk-restricted-token';
export const COUNTRIES = 'gql_countries';
export const STATES = 'gql_states';

async function api(method, path, body, token = env.adminToken) {
  const res = await fetch(env.directusUrl + path, {
    method,
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function must(method, path, body) {
  const r = await api(method, path, body);
  if (r.status >= 300) throw new Error(`${method} ${path}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body?.data;
}

// fields: names of string fields, or full field objects of the POST /collections body.
async function ensureCollection(name, fields) {
  if ((await api('GET', `/collections/${name}`)).status === 200) return;
  await must('POST', '/collections', {
    collection: name,
    schema: {},
    meta: {},
    fields: [
      { field: 'id', type: 'integer', schema: { is_primary_key: true, has_auto_increment: true }, meta: { hidden: true } },
      ...fields.map((f) => (typeof f === 'string' ? { field: f, type: 'string', schema: {}, meta: {} } : f)),
    ],
  });
}

async function ensureManyToOne(collection, field, related) {
  if ((await api('GET', `/relations/${collection}/${field}`)).status === 200) return;
  await must('POST', '/relations', { collection, field, related_collection: related, schema: { on_delete: 'SET NULL' } });
}

export async function ensureFixture() {
  await ensureCollection(COLLECTION, ['title', 'status', 'secret', 'tag']);
  await ensureCollection(PRIVATE_COLLECTION, ['title']);
  await ensureCollection(COUNTRIES, ['name']);
  await ensureCollection(STATES, [
    'name',
    { field: 'country_id', type: 'integer', schema: {}, meta: { special: ['m2o'], interface: 'select-dropdown-m2o' } },
  ]);
  await ensureManyToOne(STATES, 'country_id', COUNTRIES);
  if ((await api('GET', '/users/me', undefined, RESTRICTED_TOKEN)).status === 200) return;
  const policy = await must('POST', '/policies', { name: 'sdk-published', app_access: false, admin_access: false });
  await must('POST', '/permissions', {
    policy: policy.id,
    collection: COLLECTION,
    action: 'read',
    fields: ['id', 'title', 'status', 'tag'],
    permissions: { status: { _eq: 'published' } },
  });
  const role = await must('POST', '/roles', { name: 'sdk-published' });
  await must('POST', '/access', { role: role.id, policy: policy.id });
  await must('POST', '/users', { email: 'sdk-restricted@example.com', role: role.id, token: RESTRICTED_TOKEN });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await ensureFixture();
  console.log(`fixture ready: ${COLLECTION}, ${PRIVATE_COLLECTION}, ${COUNTRIES}, ${STATES}, restricted user`);
}
