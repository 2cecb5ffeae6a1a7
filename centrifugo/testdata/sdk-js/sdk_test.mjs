// Drives the centrifuge npm SDK against a wsgate server started by
// sdk_js_test.go. Exits 0 when every step passed; prints the failing step
// otherwise.
import WebSocket from 'ws';

const { WS_URL, API_URL, API_KEY, TOKEN, BAD_TOKEN, PROTOCOL } = process.env;
const { Centrifuge } = await import(PROTOCOL === 'protobuf' ? 'centrifuge/build/protobuf' : 'centrifuge');

// With Protobuf the SDK hands payloads over as bytes and offsets as Longs.
const decode = d => (d instanceof Uint8Array ? JSON.parse(new TextDecoder().decode(d)) : d);
const encode = v => (PROTOCOL === 'protobuf' ? new TextEncoder().encode(JSON.stringify(v)) : v);
const num = v => (typeof v === 'number' ? v : Number(v.toString()));

function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exit(1);
}

function within(promise, ms, what) {
  return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error('timeout: ' + what)), ms))]);
}

async function api(method, body) {
  const res = await fetch(`${API_URL}/${method}`, { method: 'POST', headers: { 'X-API-Key': API_KEY }, body: JSON.stringify(body) });
  const json = await res.json();
  if (json.error) throw new Error(`${method}: ${JSON.stringify(json.error)}`);
  return json.result;
}

// A queue of events, awaited one at a time.
function queue() {
  const items = [];
  const waiters = [];
  return {
    push(v) { const w = waiters.shift(); if (w) w(v); else items.push(v); },
    next(what) { return within(items.length ? Promise.resolve(items.shift()) : new Promise(r => waiters.push(r)), 10000, what); },
    size() { return items.length; },
  };
}

const client = new Centrifuge(WS_URL, { token: TOKEN, websocket: WebSocket, minReconnectDelay: 50, maxReconnectDelay: 200, timeout: 5000 });
const sub = client.newSubscription('chat:js', { recoverable: true, positioned: true });
const pubs = queue();
const subscribed = queue();
sub.on('publication', ctx => pubs.push(ctx));
sub.on('subscribed', ctx => subscribed.push(ctx));

try {
  client.connect();
  sub.subscribe();
  const first = await subscribed.next('subscribed');
  if (!first.recoverable || !first.positioned) fail('subscribed: ' + JSON.stringify(first));

  await api('publish', { channel: 'chat:js', data: { n: 1 } });
  await api('publish', { channel: 'chat:js', data: { n: 2 } });
  for (let n = 1; n <= 2; n++) {
    const p = await pubs.next('publication ' + n);
    if (num(p.offset) !== n || decode(p.data).n !== n) fail(`publication ${n}: ` + JSON.stringify(p));
  }

  // Away: three publications are missed, then recovered exactly.
  client.disconnect();
  for (let n = 3; n <= 5; n++) await api('publish', { channel: 'chat:js', data: { n } });
  client.connect();
  const again = await subscribed.next('resubscribed');
  if (!again.wasRecovering || !again.recovered) fail('resubscribed without recovery: ' + JSON.stringify(again));
  for (let n = 3; n <= 5; n++) {
    const p = await pubs.next('recovered publication ' + n);
    if (num(p.offset) !== n || decode(p.data).n !== n) fail(`recovered publication ${n}: ` + JSON.stringify(p));
  }
  await new Promise(r => setTimeout(r, 100));
  if (pubs.size() !== 0) fail('extra publications after recovery');

  const presence = await sub.presence();
  const entries = Object.values(presence.clients);
  if (entries.length !== 1 || entries[0].user !== 'js-user') fail('presence: ' + JSON.stringify(presence));
  const stats = await sub.presenceStats();
  if (stats.numClients !== 1 || stats.numUsers !== 1) fail('presence stats: ' + JSON.stringify(stats));
  const history = await sub.history({ limit: -1 });
  if (history.publications.length !== 5 || num(history.offset) !== 5 || history.epoch !== again.streamPosition.epoch) fail('history: ' + JSON.stringify(history));

  await sub.publish(encode({ from: 'js' }));
  const own = await pubs.next('own publication');
  if (num(own.offset) !== 6 || decode(own.data).from !== 'js' || !own.info || own.info.user !== 'js-user') fail('own publication: ' + JSON.stringify(own));
  client.disconnect();

  // A bad token is refused with Centrifugo's code.
  const bad = new Centrifuge(WS_URL, { token: BAD_TOKEN, websocket: WebSocket, minReconnectDelay: 50 });
  const disconnected = queue();
  bad.on('disconnected', ctx => disconnected.push(ctx));
  bad.connect();
  const d = await disconnected.next('disconnected');
  if (d.code !== 3500 || d.reason !== 'invalid token') fail('bad token: ' + JSON.stringify(d));
  bad.disconnect();
  console.log('ok: centrifuge-js ' + (PROTOCOL || 'json'));
  process.exit(0);
} catch (e) {
  fail(e.stack || String(e));
}
