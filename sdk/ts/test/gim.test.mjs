// The SDK against a real local gim (one logic, two conn nodes; see gim.mjs), over WebSocket with
// the ws package as Node 20's WebSocket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import {
  GimClient, GimCode, GimError, MessageStatus, isRetryable, MessageView, PackageType, ReceiverType, Session, StoppedError,
  SyncOutputSchema, textOf,
} from '../dist/index.js';
import { fromBinary } from '@bufbuild/protobuf';
import { OutputSchema, SyncInputSchema } from '../dist/index.js';
import { startGim, PAGE } from './gim.mjs';
import { Recorder } from './events.mjs';

let gim;
const clients = [];

before(async () => { gim = await startGim(); });
after(async () => {
  for (const c of clients) c.close();
  await gim?.stop();
});

/** A started client with its recorder. Heartbeats well under the test nodes' idle timeout. */
function client(credentials, opts = {}) {
  const c = new GimClient({
    endpoints: gim.urls, credentials, WebSocket, heartbeatMs: 500, requestTimeoutMs: 5000,
    backoff: { initialMs: 50, maxMs: 500 }, ...opts,
  });
  const rec = new Recorder(c);
  clients.push(c);
  c.start();
  return { c, rec };
}

async function connected(credentials, opts) {
  const x = client(credentials, opts);
  await x.rec.until('connected', () => x.rec.of('connected').length > 0);
  return x;
}

/** Every persisted message once, seqs strictly increasing per list. */
function assertExactlyOnceInOrder(messages) {
  const last = new Map();
  const seen = new Set();
  for (const m of messages) {
    const list = m.receiverType === ReceiverType.LARGE_GROUP ? `g${m.receiverId}` : 'u';
    const key = `${list}:${m.seq}`;
    assert.ok(!seen.has(key), `seq ${key} delivered twice`);
    seen.add(key);
    assert.ok(m.seq > (last.get(list) ?? 0n), `seq ${key} after ${last.get(list)}`);
    last.set(list, m.seq);
  }
}

describe('sign-in', () => {
  test('signs in with the first frame and reports the node', async () => {
    const [u] = await gim.users(1);
    const { c, rec } = await connected(await gim.credentials(u), { endpoints: [gim.url('b')] });
    assert.equal(rec.of('connected')[0].endpoint, gim.url('b'));
    assert.equal(c.endpoint, gim.url('b'));
    c.close();
  });

  test('a bad token fails for good with gim code 1002, without retrying', async () => {
    const [u] = await gim.users(1);
    const creds = await gim.credentials(u);
    const { c, rec } = client({ ...creds, token: creds.token.slice(0, -4) + 'AAAA' });
    const [f] = await rec.until('failed', () => rec.of('failed'));
    assert.ok(f.error instanceof GimError);
    assert.equal(f.error.code, GimCode.UNAUTHORIZED);
    await assert.rejects(c.waitConnected(100), GimError);
    assert.equal(rec.of('connected').length, 0);
  });
});

describe('messages', () => {
  test('1:1: the receiver gets the message once, the sender its own copy', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1), { firstEndpoint: 0 });
    const b = await connected(await gim.credentials(u2), { firstEndpoint: 1 });
    assert.notEqual(a.c.endpoint, b.c.endpoint, 'the two users are on different nodes');
    const sent = await a.c.sendText(ReceiverType.USER, u2, 'hello');
    // send() resolves after the sender's own copy was delivered.
    const own = a.rec.messages.find((m) => m.messageId === sent.messageId);
    assert.ok(own, 'own copy delivered before send resolved');
    assert.equal(own.seq, sent.seq);
    const [got] = await b.rec.until('the message', () => b.rec.messages.length === 1 && b.rec.messages);
    assert.equal(textOf(got), 'hello');
    assert.equal(got.senderId, u1);
    assert.equal(got.messageId, sent.messageId);
    const reply = await b.c.sendText(ReceiverType.USER, u1, 'hi back');
    await a.rec.until('the reply', () => a.rec.messages.some((m) => m.messageId === reply.messageId));
    assert.deepEqual(a.rec.texts(), ['hello', 'hi back']);
    assert.deepEqual(b.rec.texts(), ['hello', 'hi back']);
    assertExactlyOnceInOrder(a.rec.messages);
    assertExactlyOnceInOrder(b.rec.messages);
    // Business errors come back at once with their code, never retried.
    await assert.rejects(a.c.sendText(ReceiverType.USER, 999_999_999n, 'nobody'), (e) => e.code === GimCode.USER_NOT_FOUND);
  });

  test('normal group: every member gets it once; a non-member is refused with 1004', async () => {
    const [u1, u2, u3, out] = await gim.users(4);
    const g = await gim.group(u1, [u2, u3]);
    const members = [];
    for (const u of [u1, u2, u3]) members.push(await connected(await gim.credentials(u)));
    const sent = await members[0].c.sendText(ReceiverType.NORMAL_GROUP, g, 'to the group');
    for (const m of members) {
      await m.rec.until('the group message', () => m.rec.messages.some((x) => x.messageId === sent.messageId));
      const views = new MessageView(m.c.userId);
      for (const x of m.rec.messages) views.add(x);
      assert.deepEqual(views.messages(`g:${g}`).map(textOf), ['to the group']);
    }
    const o = await connected(await gim.credentials(out));
    await assert.rejects(o.c.sendText(ReceiverType.NORMAL_GROUP, g, 'let me in'), (e) => e.code === GimCode.NOT_IN_GROUP);
  });

  test('sending over the rate limit is refused with 1011 and a retry-after', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1));
    // The app's default allows a burst of 100 sends, then 20 a second: 150 in a row go over.
    const results = await Promise.allSettled(
      Array.from({ length: 150 }, (_, i) => a.c.sendText(ReceiverType.USER, u2, `burst ${i}`)),
    );
    const limited = results.filter((r) => r.status === 'rejected' && r.reason.code === GimCode.RATE_LIMITED);
    assert.ok(limited.length > 0, 'some sends were refused');
    assert.ok(limited.every((r) => r.reason.retryAfterMs > 0), 'each says how long to wait');
    assert.ok(!isRetryable(limited[0].reason), 'not retried blindly');
  });

  test('a retried send with the same client request id stores one message', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1));
    const b = await connected(await gim.credentials(u2));
    const id = a.c.newRequestId();
    const first = await a.c.send({ receiverType: ReceiverType.USER, receiverId: u2, text: 'once', clientRequestId: id });
    const again = await a.c.send({ receiverType: ReceiverType.USER, receiverId: u2, text: 'once', clientRequestId: id });
    assert.equal(again.seq, first.seq);
    assert.equal(again.messageId, first.messageId);
    const marker = await a.c.sendText(ReceiverType.USER, u2, 'after');
    await b.rec.until('the marker', () => b.rec.messages.some((m) => m.messageId === marker.messageId));
    assert.deepEqual(b.rec.texts(), ['once', 'after']);
  });

  test('a send whose reply is lost with the connection is retried with its request id and stored once', async () => {
    const [u1, u2] = await gim.users(2);
    const b = await connected(await gim.credentials(u2));
    let dropped = 0;
    // The ws WebSocket, except that the first SEND_MESSAGE reply is lost and the socket closed.
    class LosingWebSocket extends WebSocket {
      set onmessage(fn) {
        super.onmessage = (e) => {
          const out = fromBinary(OutputSchema, new Uint8Array(e.data));
          if (out.type === PackageType.SEND_MESSAGE && out.requestId !== 0n && dropped === 0) {
            dropped += 1;
            this.close();
            return;
          }
          fn(e);
        };
      }
      get onmessage() { return super.onmessage; }
    }
    const a = await connected(await gim.credentials(u1), { WebSocket: LosingWebSocket });
    const res = await a.c.sendText(ReceiverType.USER, u2, 'lost reply');
    assert.equal(dropped, 1, 'the first reply was lost');
    assert.equal(a.rec.of('connected').length, 2, 'the retry went out on a new connection');
    const marker = await a.c.sendText(ReceiverType.USER, u2, 'marker');
    await b.rec.until('the marker', () => b.rec.messages.some((m) => m.messageId === marker.messageId));
    assert.deepEqual(b.rec.texts(), ['lost reply', 'marker'], 'stored once');
    assert.equal(b.rec.messages[0].messageId, res.messageId);
    assert.deepEqual(a.rec.texts(), ['lost reply', 'marker']);
  });

  test('a send issued before the client is connected waits for the connection and goes through', async () => {
    const [u1, u2] = await gim.users(2);
    const b = await connected(await gim.credentials(u2));
    const a = new GimClient({ endpoints: gim.urls, credentials: await gim.credentials(u1), WebSocket, heartbeatMs: 500 });
    clients.push(a);
    const sending = a.sendText(ReceiverType.USER, u2, 'queued');
    a.start();
    const res = await sending;
    await b.rec.until('the queued message', () => b.rec.messages.some((m) => m.messageId === res.messageId));
  });
});

describe('connection loss', () => {
  test('heartbeats keep a connection open that the server closes when idle', async () => {
    const [u1, u2] = await gim.users(2);
    const beating = await connected(await gim.credentials(u1), { endpoints: [gim.url('a')] });
    const quiet = await connected(await gim.credentials(u2), { endpoints: [gim.url('a')], heartbeatMs: 0 });
    // Signed in at about the same time: the server closes the quiet one after its idle timeout.
    const [d] = await quiet.rec.until('the server closing the quiet one', () => quiet.rec.of('disconnected'));
    assert.match(d.reason, /socket closed/);
    assert.equal(beating.rec.of('disconnected').length, 0, 'the heartbeating client was never closed');
  });

  test('after the server closes the socket, the client reconnects and gets what it missed exactly once', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1));
    // No heartbeats: the node closes this one every idle timeout.
    const b = await connected(await gim.credentials(u2), { heartbeatMs: 0, firstEndpoint: 0 });
    await a.c.sendText(ReceiverType.USER, u2, 'm1');
    await b.rec.until('m1', () => b.rec.messages.length === 1);
    await b.rec.until('the server closing it', () => b.rec.of('disconnected').length === 1);
    // Sent while it is away; then again once it is back.
    await a.c.sendText(ReceiverType.USER, u2, 'm2');
    await a.c.sendText(ReceiverType.USER, u2, 'm3');
    await b.rec.until('the reconnect', () => b.rec.of('connected').length === 2);
    await a.c.sendText(ReceiverType.USER, u2, 'm4');
    await b.rec.until('m1..m4', () => b.rec.messages.length >= 4);
    assert.deepEqual(b.rec.texts(), ['m1', 'm2', 'm3', 'm4']);
    assertExactlyOnceInOrder(b.rec.messages);
    assert.equal(b.rec.of('connected')[1].endpoint, gim.url('b'), 'moved to the next node');
  });

  test('a conn node that dies: clients move to the other node and lose nothing', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1), { endpoints: [gim.url('b')] });
    const b = await connected(await gim.credentials(u2), { firstEndpoint: 0 });
    assert.equal(b.c.endpoint, gim.url('a'));
    await a.c.sendText(ReceiverType.USER, u2, 'before');
    await b.rec.until('before', () => b.rec.messages.length === 1);
    await gim.stopConn('a', 'SIGKILL');
    try {
      const sends = [];
      for (let i = 0; i < 5; i++) sends.push(a.c.sendText(ReceiverType.USER, u2, `during ${i}`));
      await Promise.all(sends);
      await b.rec.until('all of them on node b', () => b.rec.messages.length === 6);
      assert.equal(b.c.endpoint, gim.url('b'));
      assert.deepEqual(new Set(b.rec.texts()), new Set(['before', ...[0, 1, 2, 3, 4].map((i) => `during ${i}`)]));
      assertExactlyOnceInOrder(b.rec.messages);
    } finally {
      await gim.startConn('a');
    }
  });

  test('RECONNECT from a draining node: the client moves and gets everything exactly once', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1), { endpoints: [gim.url('b')] });
    const b = await connected(await gim.credentials(u2), { firstEndpoint: 0 });
    assert.equal(b.c.endpoint, gim.url('a'));
    // Pushes keep coming while the node drains and the client moves.
    const sending = (async () => {
      for (let i = 0; i < 20; i++) await a.c.sendText(ReceiverType.USER, u2, `n${i}`);
    })();
    await b.rec.until('a first message', () => b.rec.messages.length > 0);
    await gim.stopConn('a', 'SIGTERM');
    try {
      const [r] = await b.rec.until('the RECONNECT notice', () => b.rec.of('reconnect'));
      assert.equal(r.endpoint, gim.url('a'));
      await sending;
      await b.rec.until('all 20', () => b.rec.messages.length === 20);
      assert.deepEqual(b.rec.texts(), Array.from({ length: 20 }, (_, i) => `n${i}`));
      assertExactlyOnceInOrder(b.rec.messages);
      assert.equal(b.c.endpoint, gim.url('b'));
    } finally {
      await gim.startConn('a');
    }
  });

  test('KICKED: the same device signing in elsewhere stops the older client', async () => {
    const [u] = await gim.users(1);
    const creds = await gim.credentials(u);
    const old = await connected(creds, { endpoints: [gim.url('a')] });
    const fresh = await connected(creds, { endpoints: [gim.url('b')] });
    await old.rec.until('kicked', () => old.rec.of('kicked').length === 1);
    await assert.rejects(old.c.waitConnected(100), StoppedError);
    assert.equal(old.rec.of('connected').length, 1, 'the kicked client does not come back');
    assert.equal(fresh.c.endpoint, gim.url('b'));
  });
});

describe('sync', () => {
  test(`sync pages with has_more (page size ${PAGE}) and the client follows them`, async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1));
    const n = 2 * PAGE + 2;
    for (let i = 0; i < n; i++) await a.c.sendText(ReceiverType.USER, u2, `p${i}`);
    // The wire: a raw session sees the pages.
    const creds = await gim.credentials(u2);
    const s = await Session.open(gim.url('a'), creds, WebSocket, {}, () => {});
    const pages = [];
    let from = 0n;
    for (;;) {
      const out = await s.call(PackageType.SYNC, SyncInputSchema, { seq: from }, SyncOutputSchema);
      pages.push({ n: out.messages.length, more: out.hasMore });
      if (!out.hasMore) break;
      from = out.messages.at(-1).seq;
    }
    s.close();
    assert.deepEqual(pages, [{ n: PAGE, more: true }, { n: PAGE, more: true }, { n: 2, more: false }]);
    // The client: everything, once, in order, from the start of the list.
    const b = await connected(await gim.credentials(u2));
    await b.rec.until(`${n} messages`, () => b.rec.messages.length === n);
    assert.deepEqual(b.rec.texts(), Array.from({ length: n }, (_, i) => `p${i}`));
    assertExactlyOnceInOrder(b.rec.messages);
  });

  test('acks: a new device of the user starts after what another device acknowledged', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1));
    const first = await connected(await gim.credentials(u2));
    await a.c.sendText(ReceiverType.USER, u2, 'k1');
    await a.c.sendText(ReceiverType.USER, u2, 'k2');
    await first.rec.until('k1, k2', () => first.rec.messages.length === 2);
    // The node answers a connection's requests in order, so once this sync is answered the ack
    // sent before it is stored.
    await first.c.resync();
    const second = await connected(await gim.credentials(u2));
    const k3 = await a.c.sendText(ReceiverType.USER, u2, 'k3');
    await second.rec.until('k3', () => second.rec.messages.some((m) => m.messageId === k3.messageId));
    assert.deepEqual(second.rec.texts(), ['k3'], 'sync from 0 started after the acked k2');
  });

  test('a restart from an older saved seq replays messages the view keeps once', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1));
    for (let i = 0; i < 4; i++) await a.c.sendText(ReceiverType.USER, u2, `d${i}`);
    const creds = await gim.credentials(u2);
    const view = new MessageView(u2);
    const first = await connected(creds);
    first.c.on('message', (m) => view.add(m));
    await first.rec.until('4 messages', () => first.rec.messages.length === 4);
    for (const m of first.rec.messages) view.add(m);
    // The app saved its view but crashed before saving the seq: it restarts from message 2's seq.
    const saved = MessageView.fromJSON(JSON.parse(JSON.stringify(view.toJSON())));
    const oldSeq = first.rec.messages[1].seq;
    first.c.close();
    const second = await connected(creds, { startSeq: oldSeq });
    let added = 0;
    second.c.on('message', (m) => { if (saved.add(m)) added++; });
    await a.c.sendText(ReceiverType.USER, u2, 'd4');
    await second.rec.until('the replay and d4', () => second.rec.texts().includes('d4'));
    assert.deepEqual(second.rec.texts(), ['d2', 'd3', 'd4'], 'the client replays from the seq it was given');
    assert.equal(added, 1, 'only d4 was new to the view');
    assert.deepEqual(saved.messages(`u:${u1}`).map(textOf), ['d0', 'd1', 'd2', 'd3', 'd4']);
  });
});

/**
 * The ws WebSocket, except that pushed messages are held until `release()`: so a test can make a
 * push arrive after a sync already returned its message, as a slow push does in real life.
 */
function holdingPushes() {
  let holding = true;
  const held = [];
  const waiters = [];
  class HoldingWebSocket {
    constructor(url) {
      this.ws = new WebSocket(url);
      this.ws.binaryType = 'arraybuffer';
      this.ws.onopen = (e) => this.onopen?.(e);
      this.ws.onclose = (e) => this.onclose?.(e);
      this.ws.onerror = (e) => this.onerror?.(e);
      this.ws.onmessage = (e) => {
        const out = fromBinary(OutputSchema, new Uint8Array(e.data));
        if (holding && out.requestId === 0n && out.type === PackageType.MESSAGE) {
          held.push(() => this.onmessage?.(e));
          for (const w of waiters.splice(0)) w();
        } else {
          this.onmessage?.(e);
        }
      };
    }
    get readyState() { return this.ws.readyState; }
    send(data) { this.ws.send(data); }
    close(code, reason) { this.ws.close(code, reason); }
  }
  return {
    HoldingWebSocket,
    /** Resolves once `n` pushes are held. */
    async held(n) { while (held.length < n) await new Promise((r) => waiters.push(r)); },
    release() { holding = false; for (const deliver of held.splice(0)) deliver(); },
  };
}

describe('dedupe', () => {
  test('a push that arrives after a sync returned its message is dropped', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1));
    const hold = holdingPushes();
    const b = await connected(await gim.credentials(u2), { WebSocket: hold.HoldingWebSocket });
    await a.c.sendText(ReceiverType.USER, u2, 'x1');
    await a.c.sendText(ReceiverType.USER, u2, 'x2');
    await b.c.resync();
    assert.deepEqual(b.rec.texts(), ['x1', 'x2'], 'synced');
    await hold.held(2);
    hold.release();
    const x3 = await a.c.sendText(ReceiverType.USER, u2, 'x3');
    await b.rec.until('x3', () => b.rec.messages.some((m) => m.messageId === x3.messageId));
    assert.deepEqual(b.rec.texts(), ['x1', 'x2', 'x3']);
    assertExactlyOnceInOrder(b.rec.messages);
  });
});

describe('bounds', () => {
  test('pushes beyond the push queue are dropped and recovered by one sync, in order', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1));
    const hold = holdingPushes();
    const b = await connected(await gim.credentials(u2), { WebSocket: hold.HoldingWebSocket, maxQueuedPushes: 1 });
    for (let i = 0; i < 5; i++) await a.c.sendText(ReceiverType.USER, u2, `q${i}`);
    await hold.held(5);
    assert.equal(b.rec.messages.length, 0);
    // All five at once: one fits the queue, four are dropped, the sync after it brings them back.
    hold.release();
    await b.rec.until('all five', () => b.rec.messages.length === 5);
    assert.deepEqual(b.rec.texts(), ['q0', 'q1', 'q2', 'q3', 'q4']);
    assertExactlyOnceInOrder(b.rec.messages);
  });

  test('a heartbeat without a reply closes the connection and the client reconnects', async () => {
    const [u] = await gim.users(1);
    let dropping = true;
    // The ws WebSocket, except that heartbeat replies are lost until the first one was.
    class DeafWebSocket extends WebSocket {
      set onmessage(fn) {
        super.onmessage = (e) => {
          const out = fromBinary(OutputSchema, new Uint8Array(e.data));
          if (dropping && out.type === PackageType.HEARTBEAT) return;
          fn(e);
        };
      }
      get onmessage() { return super.onmessage; }
    }
    const x = client(await gim.credentials(u), { WebSocket: DeafWebSocket, heartbeatMs: 100, requestTimeoutMs: 300 });
    const [d] = await x.rec.until('the heartbeat failing', () => x.rec.of('disconnected'));
    assert.match(d.reason, /heartbeat failed/);
    dropping = false;
    await x.rec.until('the reconnect', () => x.rec.of('connected').length === 2);
  });
});

describe('large groups', () => {
  test('pushes in group-seq order, history pages, and offline catch-up of a tracked group', async () => {
    const [owner, m1, m2, outsider] = await gim.users(4);
    const g = await gim.group(owner, [m1, m2], { large: true });
    const o = await connected(await gim.credentials(owner));
    await o.c.trackLargeGroup(g);
    const on = await connected(await gim.credentials(m1));
    await on.c.trackLargeGroup(g, 0n);
    const n = PAGE + 2;
    for (let i = 0; i < n; i++) {
      const r = await o.c.sendText(ReceiverType.LARGE_GROUP, g, `L${i}`);
      assert.equal(o.rec.messages.at(-1)?.seq, r.seq, 'the sender has its own copy when send resolves');
    }
    await on.rec.until(`${n} group messages`, () => on.rec.messages.length === n);
    assert.deepEqual(on.rec.texts(), Array.from({ length: n }, (_, i) => `L${i}`));
    assertExactlyOnceInOrder(on.rec.messages);
    assert.equal(on.c.groupSeq(g), on.rec.messages.at(-1).seq);
    // History, page by page.
    const p1 = await on.c.groupHistory(g, 0n);
    assert.equal(p1.messages.length, PAGE);
    assert.ok(p1.hasMore);
    const p2 = await on.c.groupHistory(g, p1.messages.at(-1).seq);
    assert.deepEqual([...p1.messages, ...p2.messages].map(textOf), on.rec.texts());
    assert.ok(!p2.hasMore);
    // A member that was offline catches up through the group's own list.
    const late = client(await gim.credentials(m2));
    await late.c.trackLargeGroup(g, 0n);
    await late.rec.until(`${n} group messages`, () => late.rec.messages.length === n);
    assert.deepEqual(late.rec.texts(), on.rec.texts());
    assertExactlyOnceInOrder(late.rec.messages);
    // A non-member is refused, and the refusal does not break its client's connection.
    const x = await connected(await gim.credentials(outsider));
    await assert.rejects(x.c.trackLargeGroup(g), (e) => e.code === GimCode.NOT_IN_GROUP);
    assert.equal(x.c.groupSeq(g), undefined, 'not tracked');
    await x.c.resync();
    assert.equal(x.rec.of('disconnected').length, 0);
  });
});

describe('conversations, history, recall / edit / delete', () => {
  test('mark read -> receipt; recall/edit -> the peer view changes; delete-for-me; history newest first; conversations', async () => {
    const [u1, u2] = await gim.users(2);
    const a = await connected(await gim.credentials(u1), { firstEndpoint: 0 });
    const b = await connected(await gim.credentials(u2), { firstEndpoint: 1 });
    const av = new MessageView(u1);
    const bv = new MessageView(u2);
    a.c.on('message', (m) => av.add(m));
    b.c.on('message', (m) => bv.add(m));
    const s1 = await a.c.sendText(ReceiverType.USER, u2, 'one');
    const s2 = await a.c.sendText(ReceiverType.USER, u2, 'two');
    const s3 = await a.c.sendText(ReceiverType.USER, u2, 'three');
    const got = await b.rec.until('three messages', () => b.rec.messages.length === 3 && b.rec.messages);
    const peerA = { peerType: ReceiverType.USER, peerId: u1 };

    // Mark read: the reply has the new position; the sender gets a RECEIPT naming the newest read.
    const conv = await b.c.markRead(peerA, got[2].seq);
    assert.equal(conv.readSeq, got[2].seq);
    assert.equal(conv.unread, 0n);
    const [receipt] = await a.rec.until('a receipt', () => a.rec.of('notice').filter((n) => n.kind === 'receipt'));
    assert.equal(receipt.data.readerId, u2);
    assert.equal(receipt.data.messageId, s3.messageId);
    assert.equal(receipt.message.seq > 0n, true);
    // A position not above the current one is refused.
    await assert.rejects(b.c.markRead(peerA, got[0].seq), (e) => e.code === GimCode.BAD_REQUEST);

    // Recall: the peer's view drops the body; so does the caller's own (recall resolves after it).
    const r = await a.c.recall(s1.messageId);
    assert.equal(r.lists, 2);
    assert.equal(av.messages(`u:${u2}`).find((m) => m.messageId === s1.messageId).status, MessageStatus.RECALL);
    await b.rec.until('a recall notice', () => b.rec.of('notice').some((n) => n.kind === 'recalled'));
    const recalled = bv.messages(`u:${u1}`).find((m) => m.messageId === s1.messageId);
    assert.equal(recalled.status, MessageStatus.RECALL);
    assert.equal(recalled.messageBody, undefined);
    // Notices are not kept as messages.
    assert.deepEqual(bv.messages(`u:${u1}`).map((m) => m.messageId), [s1.messageId, s2.messageId, s3.messageId]);

    // Edit: the peer's view shows the new text and edit version.
    const e = await a.c.edit(s2.messageId, 'two, edited');
    assert.equal(e.editVersion, 1n);
    await b.rec.until('an edit notice', () => b.rec.of('notice').some((n) => n.kind === 'edited'));
    const edited = bv.messages(`u:${u1}`).find((m) => m.messageId === s2.messageId);
    assert.equal(textOf(edited), 'two, edited');
    assert.equal(edited.editVersion, 1n);

    // Only the sender (or a group admin) may recall.
    await assert.rejects(b.c.recall(s2.messageId), (e) => e.code === GimCode.NOT_MESSAGE_SENDER);

    // Delete-for-me: the caller's copy becomes a tombstone; the sender's stays.
    const d = await b.c.deleteForMe(s3.messageId);
    assert.equal(d.lists, 1);
    assert.equal(bv.messages(`u:${u1}`).find((m) => m.messageId === s3.messageId).status, MessageStatus.DELETED);
    assert.equal(textOf(av.messages(`u:${u2}`).find((m) => m.messageId === s3.messageId)), 'three');

    // History: pages newest first, recalled / deleted copies without a body.
    const p1 = await b.c.getHistory(peerA, 0n, 2);
    assert.deepEqual(p1.messages.map((m) => m.messageId), [s3.messageId, s2.messageId]);
    assert.ok(p1.hasMore);
    assert.equal(p1.messages[0].status, MessageStatus.DELETED);
    assert.equal(textOf(p1.messages[1]), 'two, edited');
    const p2 = await b.c.getHistory(peerA, p1.messages.at(-1).seq, 2);
    assert.deepEqual(p2.messages.map((m) => m.messageId), [s1.messageId]);
    assert.equal(p2.messages[0].status, MessageStatus.RECALL);
    assert.ok(!p2.hasMore);

    // Conversations: listed, then pinned; a later page after the version shows the change only.
    const all = await b.c.getConversations(0n, 0);
    const c1 = all.conversations.find((c) => c.peerId === u1);
    assert.ok(c1 && c1.peerType === ReceiverType.USER);
    assert.equal(c1.readSeq, got[2].seq);
    const pinned = await b.c.updateConversation(c1, { pinned: true });
    assert.ok(pinned.pinned);
    const since = await b.c.getConversations(all.version, 10);
    assert.deepEqual(since.conversations.map((c) => [c.peerId, c.pinned]), [[u1, true]]);
    await assert.rejects(b.c.updateConversation(c1, {}), (e) => e.code === GimCode.BAD_REQUEST);
  });
});
