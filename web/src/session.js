// One gim session over WebSocket, with the same delivery rules as the Rust SDK: sign in with a
// SIGN_IN envelope (browsers cannot set upgrade headers), sync from the last seq seen before
// handling pushes, drop pushes at or below it, sync on a gap, ack what was delivered, reconnect
// (to the next node) and resync on any disconnect, stop when kicked.
import * as P from './proto.js';

const REQUEST_TIMEOUT_MS = 10000;
const HEARTBEAT_MS = 30000;

export class GimError extends Error {
  constructor(code, message) {
    super(`${message || 'error'} (gim code ${code})`);
    this.code = code;
  }
}

export class Session {
  // opts: { endpoints, nodeIndex, creds: {app_id, user_id, device_id, token}, lastSeq,
  //         onMessage(item), onStatus(text), onError(err), onKicked(reason) }
  constructor(opts) {
    this.o = opts;
    this.idx = opts.nodeIndex || 0;
    this.lastSeq = BigInt(opts.lastSeq || '0');
    this.acked = this.lastSeq;
    this.nextId = 1;
    this.pending = new Map();
    this.stopped = false;
    this.ws = null;
    this.backoff = 200;
    this.chain = Promise.resolve();
  }

  start() { this.connect(); }

  stop() {
    this.stopped = true;
    clearInterval(this.hb);
    if (this.ws) this.ws.close();
  }

  get endpoint() { return this.o.endpoints[this.idx % this.o.endpoints.length]; }

  connect() {
    if (this.stopped) return;
    const url = this.endpoint;
    this.o.onStatus(`connecting to ${url}`);
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => this.onOpen(ws, url);
    ws.onmessage = (ev) => this.onFrame(new Uint8Array(ev.data));
    ws.onclose = () => this.onClose(ws);
  }

  async onOpen(ws, url) {
    try {
      const c = this.o.creds;
      await this.request(P.PackageType.SIGN_IN, P.SignInInput,
        { app_id: c.app_id, user_id: c.user_id, device_id: c.device_id, token: c.token });
      this.backoff = 200;
      this.o.onStatus(`signed in as user ${c.user_id} on ${url}`);
      clearInterval(this.hb);
      this.hb = setInterval(() => this.request(P.PackageType.HEARTBEAT, null, {}).catch(() => ws.close()), HEARTBEAT_MS);
      await this.serial(() => this.sync());
    } catch (e) {
      this.o.onError(e);
      if (e instanceof GimError && e.code !== 1001) {
        // A refused sign-in does not get better by retrying.
        this.stopped = true;
      }
      ws.close();
    }
  }

  onClose(ws) {
    if (ws !== this.ws) return;
    clearInterval(this.hb);
    for (const p of this.pending.values()) p.reject(new Error('connection closed'));
    this.pending.clear();
    if (this.stopped) { this.o.onStatus('signed out'); return; }
    this.idx += 1; // the node we lost may be gone: try the next one
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, 5000);
    this.o.onStatus(`disconnected, reconnecting in ${wait} ms`);
    setTimeout(() => this.connect(), wait);
  }

  onFrame(bytes) {
    let out;
    try { out = P.decode(P.Output, bytes); } catch (e) { this.o.onError(e); return; }
    if (out.request_id !== '0') {
      const p = this.pending.get(out.request_id);
      if (p) { this.pending.delete(out.request_id); p.resolve(out); }
      return;
    }
    switch (out.type) {
      case P.PackageType.MESSAGE: {
        const m = P.decode(P.Message, out.data).message;
        if (m) this.serial(() => this.onPush(m));
        break;
      }
      case P.PackageType.RECONNECT: {
        const n = P.decode(P.ReconnectNotice, out.data);
        this.o.onStatus(`node draining (${n.reason}), moving`);
        setTimeout(() => this.ws && this.ws.close(), Math.min(Number(n.after_ms) || 0, 10000));
        break;
      }
      case P.PackageType.KICKED: {
        const n = P.decode(P.KickNotice, out.data);
        this.stopped = true;
        this.o.onKicked(n.reason);
        break;
      }
      default:
        break;
    }
  }

  // Pushes and syncs run one at a time, in arrival order.
  serial(fn) {
    this.chain = this.chain.then(fn).catch((e) => this.o.onError(e));
    return this.chain;
  }

  request(type, msgType, obj) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error('not connected'));
    const id = String(this.nextId++);
    const data = msgType ? P.encode(msgType, obj) : new Uint8Array();
    ws.send(P.encode(P.Input, { type, request_id: id, data }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.pending.delete(id); reject(new Error('request timed out')); }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, {
        resolve: (out) => {
          clearTimeout(timer);
          if (out.code !== 0) reject(new GimError(out.code, out.message)); else resolve(out.data);
        },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
    });
  }

  async onPush(m) {
    const seq = BigInt(m.seq);
    if (seq === 0n || m.receiver_type === P.ReceiverType.LARGE_GROUP) { this.o.onMessage(m); return; }
    if (seq <= this.lastSeq) return;
    if (seq === this.lastSeq + 1n) { this.deliver(m); this.ack(); return; }
    await this.sync();
    // A sync from 0 starts after the highest ack of the user's devices, which another device
    // may have moved past this message meanwhile: the push itself is still news here.
    if (seq > this.lastSeq) { this.deliver(m); this.ack(); }
  }

  deliver(m) {
    this.lastSeq = BigInt(m.seq);
    this.o.onMessage(m);
  }

  async sync() {
    for (;;) {
      const from = this.lastSeq;
      const data = await this.request(P.PackageType.SYNC, P.SyncInput, { seq: from.toString() });
      const out = P.decode(P.SyncOutput, data);
      for (const m of out.messages) if (BigInt(m.seq) > this.lastSeq) this.deliver(m);
      if (!out.has_more || this.lastSeq === from) break;
    }
    this.ack();
  }

  ack() {
    if (this.lastSeq <= this.acked || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    this.acked = this.lastSeq;
    const data = P.encode(P.MessageACK, { device_ack: this.lastSeq.toString(), receive_time: Date.now() });
    this.ws.send(P.encode(P.Input, { type: P.PackageType.MESSAGE, request_id: '0', data }));
  }

  async sendText(receiverType, receiverId, text) {
    const input = {
      receiver_type: receiverType,
      receiver_id: String(receiverId),
      message_body: { message_type: 1, message_content: { text: { text } } },
      send_time: Date.now(),
      is_persist: true,
      client_request_id: String(Date.now() * 1000 + Math.floor(Math.random() * 1000)),
    };
    const data = await this.request(P.PackageType.SEND_MESSAGE, P.SendMessageInput, input);
    const out = P.decode(P.SendMessageOutput, data);
    // The sending device gets no push of its own copy: fetch it in order.
    if (receiverType !== P.ReceiverType.LARGE_GROUP) await this.serial(() => this.sync());
    return out;
  }
}
