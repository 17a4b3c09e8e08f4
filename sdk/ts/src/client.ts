// The resilient client: keeps one session up across disconnects, drains and node restarts, and
// hands the application every message of the user's list and of tracked large groups exactly
// once, in seq order.
//
// How (SPEC §4: a message is durable before any push; pushes are best effort; sync fills gaps):
// - one serial task queue owns the delivery state (the last seq of the user's list, the last group
//   seq of each tracked large group); only it emits messages;
// - a push at or below the last delivered seq is a duplicate and dropped; the next seq is
//   delivered; a larger one means something was missed or is still being stored, so it is held,
//   the queue syncs from the last seq, and nothing past a remaining gap is delivered or acked
//   until the gap fills or `gapWaitMs` passes (re-syncing every 250 ms; see order.ts);
// - after every (re)connect the client syncs (page by page while `has_more`) before it handles
//   pushes; pushes that arrived meanwhile wait behind the sync and are deduped by seq;
// - after a send the client syncs, so the sender's own copy (never pushed to the sending device)
//   arrives in order.
// Seqs may skip numbers (a failed store, a counter reset), so a gap never stalls longer than `gapWaitMs`.

import { create, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ConversationCommand,
  ConversationSchema,
  GetConversationsInputSchema,
  GetConversationsOutputSchema,
  GetHistoryInputSchema,
  GetHistoryOutputSchema,
  MarkReadInputSchema,
  MessageChangeInputSchema,
  MessageChangeNoticeSchema,
  MessageChangeOutputSchema,
  ReadNoticeSchema,
  SenderType,
  UpdateConversationInputSchema,
  type Conversation,
  type GetConversationsOutput,
  type MessageChangeNotice,
  type MessageChangeOutput,
  type ReadNotice,
  GroupSyncInputSchema,
  GroupSyncOutputSchema,
  MessageBodySchema,
  MessageType,
  PackageType,
  ReceiverType,
  SendMessageInputSchema,
  SendMessageOutputSchema,
  SyncInputSchema,
  SyncOutputSchema,
  type MessageBody,
  type MessageItem,
} from "./gen/gim/connect/v1/connect_pb.js";
import { Backoff, type BackoffOptions } from "./backoff.js";
import { Ordered } from "./order.js";
import { GimError, GimCode, StoppedError, TimeoutError, isRetryable } from "./errors.js";
import { Session, type Credentials, type Push, type SessionOptions, type WebSocketConstructor } from "./session.js";

/** An id as the application has it: 64-bit ids are bigint in the SDK; numbers and decimal strings are accepted. */
export type Id = bigint | number | string;

export interface ClientOptions extends SessionOptions {
  /** Conn nodes' WebSocket URLs (`ws://host:port/ws`), tried in order; after a loss the next one. */
  endpoints: string[];
  credentials: { appId: Id; userId: Id; deviceId: Id; token: string };
  /** The WebSocket class: the browser's by default; in Node 20 pass the `ws` package's. */
  WebSocket?: WebSocketConstructor;
  /**
   * The last seq of the user's list the application already has (it persisted it); 0 (default)
   * lets the server start after the highest ack of the user's devices.
   */
  startSeq?: Id;
  /** Reconnect delays (default 100 ms doubling to 5 s, jittered). */
  backoff?: BackoffOptions;
  /** How long {@link GimClient.send} keeps retrying with the same request id (default 30000 ms). */
  sendDeadlineMs?: number;
  /**
   * Pushes waiting to be handled (default 4096). When full, further pushed messages are dropped
   * and one sync recovers them from the server once the queue drains: nothing is lost.
   */
  maxQueuedPushes?: number;
  /** Index of the first endpoint to try (default 0). */
  firstEndpoint?: number;
  /**
   * How long messages above a seq gap wait for it to fill before it is skipped (default 3000 ms):
   * longer than the server's slowest store, short enough that a seq never stored stalls little.
   */
  gapWaitMs?: number;
}

/** What the application sees. */
export interface ClientEvents {
  /** Signed in (first time or after a reconnect) and caught up. */
  connected: { endpoint: string };
  /**
   * A message. Persisted messages (seq > 0) of the user's list and of tracked large groups come in
   * strictly increasing seq per list, each exactly once; seq 0 ones (not persisted) are best effort.
   */
  message: MessageItem;
  /** The connection ended; the client reconnects by itself after `retryInMs`. */
  disconnected: { endpoint: string; reason: string; retryInMs: number };
  /** The server asked to reconnect elsewhere (its node is draining). */
  reconnect: { endpoint: string; reason: string; afterMs: number };
  /** The same device signed in elsewhere. The client has stopped. */
  kicked: { reason: string };
  /** Sign-in was refused for good (bad token, device of another user...). The client has stopped. */
  failed: { error: Error };
  /** Something went wrong that the client recovers from (logged by the demo, never fatal). */
  error: { error: Error };
  /**
   * A conversation notice (read position, receipt, conversation update, recall, edit,
   * delete-for-me), decoded; emitted right after the `message` event of the notice itself (see
   * {@link noticeOf}), with the same exactly-once, in-order guarantee.
   */
  notice: Notice;
}

/**
 * A gim conversation notice, decoded from a notice message (sender type SYSTEM, a COMMAND body
 * with a code below 1000; docs/protocol.md "Conversations"). `message` is the notice message.
 */
export type Notice =
  /** The user's read position moved (on another device of theirs). */
  | { kind: "read"; data: ReadNotice; message: MessageItem }
  /** Someone read the user's messages up to `data.messageId`. */
  | { kind: "receipt"; data: ReadNotice; message: MessageItem }
  /** A conversation was pinned, muted or deleted (on another device): `data` is it after the change. */
  | { kind: "updated"; data: Conversation; message: MessageItem }
  /** A message was recalled: its copy at `data.seq` lost its body. */
  | { kind: "recalled"; data: MessageChangeNotice; message: MessageItem }
  /** A message was edited: `data.messageBody` and `data.editVersion` are the new ones. */
  | { kind: "edited"; data: MessageChangeNotice; message: MessageItem }
  /** The user deleted their copy (on another device): it is a tombstone now. */
  | { kind: "deleted"; data: MessageChangeNotice; message: MessageItem };

/**
 * Decodes a gim conversation notice; undefined for any other message (including application
 * COMMAND messages, codes 1000 and up) and for a notice whose data does not decode.
 */
export function noticeOf(m: MessageItem): Notice | undefined {
  if (m.senderType !== SenderType.SYSTEM || m.messageBody?.messageType !== MessageType.COMMAND) return undefined;
  const c = m.messageBody.messageContent?.content;
  if (!c || c.case !== "command" || c.value.code >= 1000) return undefined;
  const bytes = c.value.data;
  try {
    switch (c.value.code) {
      case ConversationCommand.READ:
        return { kind: "read", data: fromBinary(ReadNoticeSchema, bytes), message: m };
      case ConversationCommand.RECEIPT:
        return { kind: "receipt", data: fromBinary(ReadNoticeSchema, bytes), message: m };
      case ConversationCommand.UPDATED:
        return { kind: "updated", data: fromBinary(ConversationSchema, bytes), message: m };
      case ConversationCommand.RECALLED:
        return { kind: "recalled", data: fromBinary(MessageChangeNoticeSchema, bytes), message: m };
      case ConversationCommand.EDITED:
        return { kind: "edited", data: fromBinary(MessageChangeNoticeSchema, bytes), message: m };
      case ConversationCommand.DELETED:
        return { kind: "deleted", data: fromBinary(MessageChangeNoticeSchema, bytes), message: m };
    }
  } catch {
    // A malformed notice is skipped rather than breaking delivery.
  }
  return undefined;
}

/** A conversation as the calls address it: `Conversation` values from {@link GimClient.getConversations} fit. */
export interface Peer {
  peerType: ReceiverType;
  peerId: Id;
}

/** What {@link GimClient.updateConversation} changes; at least one. */
export interface ConversationChange {
  pinned?: boolean;
  muted?: boolean;
  /** Remove from the list (marks everything read); the next message brings it back. */
  delete?: boolean;
}

type Listener<T> = (ev: T) => void;

/** What a send stores: `text` is shorthand for a TEXT body. */
export interface SendInput {
  receiverType: ReceiverType;
  receiverId: Id;
  text?: string;
  body?: MessageInitShape<typeof MessageBodySchema>;
  /** @-mentions. */
  toUserIds?: Id[];
  /** false: not stored, seq 0, pushed to online devices only (typing notices). Default true. */
  persist?: boolean;
  /** Idempotency key; a fresh one when absent. Reuse it to retry a send yourself. */
  clientRequestId?: bigint;
}

export interface SendResult {
  /** The message's seq in the sender's list (or the group's, for a large group); 0 when not persisted. */
  seq: bigint;
  messageId: bigint;
  clientRequestId: bigint;
}

export interface HistoryPage {
  messages: MessageItem[];
  hasMore: boolean;
}

const toId = (v: Id): bigint => (typeof v === "bigint" ? v : BigInt(v));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A text message body. */
export function textBody(text: string): MessageBody {
  return create(MessageBodySchema, {
    messageType: MessageType.TEXT,
    messageContent: { content: { case: "text", value: { text } } },
  });
}

/** The text of a TEXT message, or undefined. */
export function textOf(m: MessageItem): string | undefined {
  const c = m.messageBody?.messageContent?.content;
  return c && c.case === "text" ? c.value.text : undefined;
}

/**
 * Keeps one signed-in connection to gim and delivers messages exactly once, in order.
 *
 * ```ts
 * const client = new GimClient({ endpoints: ["ws://127.0.0.1:8081/ws"], credentials });
 * client.on("message", (m) => view.add(m));
 * client.start();
 * await client.sendText(ReceiverType.USER, 2n, "hi");
 * ```
 */
export class GimClient {
  private readonly opts: ClientOptions;
  private readonly creds: Credentials;
  private readonly WS: WebSocketConstructor;
  private readonly listeners = new Map<keyof ClientEvents, Set<Listener<any>>>();
  private session: Session | undefined;
  private sessionWaiters: Array<{ resolve(s: Session): void; reject(e: Error): void }> = [];
  private stopped: Error | undefined;
  private started = false;
  private idx: number;
  private readonly backoff: Backoff;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  // The user's list in seq order (held above a gap; see order.ts).
  private readonly list: Ordered<MessageItem>;
  private gapTimer: ReturnType<typeof setTimeout> | undefined;
  private acked: bigint;
  private readonly groups = new Map<bigint, bigint>();
  // Serial queue: syncs and pushes run one at a time, in arrival order.
  private chain: Promise<void> = Promise.resolve();
  private queued = 0;
  private overflowed = false;
  private nextRequestId: bigint;

  constructor(opts: ClientOptions) {
    if (!opts.endpoints.length) throw new Error("GimClient: at least one endpoint");
    const WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new Error("GimClient: no WebSocket here; pass options.WebSocket (in Node 20: the ws package)");
    this.opts = opts;
    this.WS = WS;
    const c = opts.credentials;
    this.creds = { appId: toId(c.appId), userId: toId(c.userId), deviceId: toId(c.deviceId), token: c.token };
    this.idx = opts.firstEndpoint ?? 0;
    this.backoff = new Backoff(opts.backoff);
    this.list = new Ordered<MessageItem>(toId(opts.startSeq ?? 0n), opts.gapWaitMs ?? 3000);
    this.acked = this.list.last;
    // Idempotency keys: time-based start plus randomness, so a restarted page or a second device
    // does not reuse keys; fits int64 until the year 2262.
    this.nextRequestId = BigInt(Date.now()) * 1_000_000n + BigInt(Math.floor(Math.random() * 1000)) * 1000n;
  }

  /** Subscribes to an event; returns the unsubscribe function. */
  on<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set!.delete(fn);
  }

  /** Starts connecting in the background. */
  start(): this {
    if (!this.started) {
      this.started = true;
      void this.connect();
    }
    return this;
  }

  /** The signed-in user. */
  get userId(): bigint {
    return this.creds.userId;
  }

  /** The highest seq of the user's list delivered to the application (persist it to resume). */
  get lastSeq(): bigint {
    return this.list.last;
  }

  /** The last delivered group seq of a tracked large group. */
  groupSeq(groupId: Id): bigint | undefined {
    return this.groups.get(toId(groupId));
  }

  /** The node signed in to, if any. */
  get endpoint(): string | undefined {
    return this.session && !this.session.isClosed ? this.session.endpoint : undefined;
  }

  /** Resolves with the session once signed in and caught up (at once if already). */
  waitConnected(timeoutMs = 30_000): Promise<Session> {
    if (this.stopped) return Promise.reject(this.stopped);
    if (this.session && !this.session.isClosed) return Promise.resolve(this.session);
    return new Promise<Session>((resolve, reject) => {
      const w = {
        resolve: (s: Session) => {
          clearTimeout(timer);
          resolve(s);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.sessionWaiters = this.sessionWaiters.filter((x) => x !== w);
        reject(new TimeoutError("waiting for a connection", timeoutMs));
      }, timeoutMs);
      this.sessionWaiters.push(w);
    });
  }

  /** A fresh idempotency key. */
  newRequestId(): bigint {
    return this.nextRequestId++;
  }

  /**
   * Sends over the long connection. Retries across reconnects with the same idempotency key until
   * `sendDeadlineMs`, so a send that may or may not have reached the server is never stored twice.
   * Business errors (e.g. 1010 user not found) reject at once. For user and normal-group sends,
   * and sends to a tracked large group, it resolves after the sender's own copy has been delivered
   * as a `message` event.
   */
  async send(input: SendInput): Promise<SendResult> {
    const clientRequestId = input.clientRequestId ?? this.newRequestId();
    const body = input.body ?? (input.text !== undefined ? textBody(input.text) : undefined);
    const msg: MessageInitShape<typeof SendMessageInputSchema> = {
      receiverType: input.receiverType,
      receiverId: toId(input.receiverId),
      toUserIds: (input.toUserIds ?? []).map(toId),
      messageBody: body,
      sendTime: BigInt(Date.now()),
      isPersist: input.persist ?? true,
      clientRequestId,
    };
    const deadline = Date.now() + (this.opts.sendDeadlineMs ?? 30_000);
    let wait = 50;
    for (;;) {
      try {
        const s = await this.waitConnected(Math.max(1, deadline - Date.now()));
        const out = await s.call(PackageType.SEND_MESSAGE, SendMessageInputSchema, msg, SendMessageOutputSchema);
        // The sending device gets no push of its own copy: fetch it, in order, from its list.
        const g = input.receiverType === ReceiverType.LARGE_GROUP ? toId(input.receiverId) : undefined;
        if (out.seq > 0n && (g === undefined || this.groups.has(g))) {
          await this.serial(async () => {
            if (g === undefined && out.seq > this.list.last) await this.syncOn(s);
            if (g !== undefined && out.seq > (this.groups.get(g) ?? 0n)) await this.groupSyncOn(s, g);
          }).catch(() => {
            // The connection went; the catch-up after the reconnect delivers the own copy.
          });
        }
        return { seq: out.seq, messageId: out.messageId, clientRequestId };
      } catch (e) {
        if (this.stopped) throw this.stopped;
        if (!isRetryable(e) || Date.now() >= deadline) throw e;
        await sleep(Math.min(wait, Math.max(0, deadline - Date.now())));
        wait = Math.min(wait * 2, 1000);
      }
    }
  }

  /** {@link send} of a text. */
  sendText(receiverType: ReceiverType, receiverId: Id, text: string): Promise<SendResult> {
    return this.send({ receiverType, receiverId, text });
  }

  /** Syncs now (e.g. when the app returns to the foreground). */
  async resync(): Promise<void> {
    const s = await this.waitConnected();
    await this.serial(() => this.catchUp(s));
  }

  /**
   * Delivers the large group's messages after `sinceSeq` (group seq) as `message` events, and
   * keeps them in order, exactly once, across reconnects. Pushes of untracked large groups start
   * tracking at their own seq.
   */
  async trackLargeGroup(groupId: Id, sinceSeq: Id = 0n): Promise<void> {
    const g = toId(groupId);
    if (!this.groups.has(g)) this.groups.set(g, toId(sinceSeq));
    const s = this.session && !this.session.isClosed ? this.session : undefined;
    // Not connected: the catch-up after sign-in syncs every tracked group.
    if (!s) return;
    try {
      await this.serial(() => this.groupSyncOn(s, g));
    } catch (e) {
      // Connection trouble: the catch-up after the reconnect syncs it. A refusal (1004 not a
      // member, 1006 not a large group) stops tracking, or every catch-up would fail on it.
      if (isRetryable(e)) return;
      this.groups.delete(g);
      throw e;
    }
  }

  /**
   * One page of a large group's history after `afterSeq` (group seq), ascending; `hasMore` says
   * another page follows the last message. Does not emit events or move tracking: for scrollback.
   */
  async groupHistory(groupId: Id, afterSeq: Id = 0n): Promise<HistoryPage> {
    const s = await this.waitConnected();
    const out = await s.call(PackageType.GROUP_SYNC, GroupSyncInputSchema, { groupId: toId(groupId), seq: toId(afterSeq) }, GroupSyncOutputSchema);
    return { messages: out.messages, hasMore: out.hasMore };
  }

  /**
   * One page of the user's conversations changed after `sinceVersion` (0: all), oldest change
   * first, deleted ones included (flagged); `largeGroups` and `unreadTotal` in every page. Ask again
   * with the reply's `version` while `hasMore`, and after a reconnect (PACKAGE_TYPE_GET_CONVERSATIONS).
   * @param limit page size; 0 = 50, at most 100.
   */
  async getConversations(sinceVersion: Id = 0n, limit = 0): Promise<GetConversationsOutput> {
    const s = await this.waitConnected();
    return s.call(PackageType.GET_CONVERSATIONS, GetConversationsInputSchema, { sinceVersion: toId(sinceVersion), limit }, GetConversationsOutputSchema);
  }

  /**
   * Pins, mutes or deletes a conversation (PACKAGE_TYPE_UPDATE_CONVERSATION); resolves with it after
   * the change. The user's other devices get an `updated` notice. A conversation without messages,
   * or an empty change, is refused with 1006.
   */
  async updateConversation(conversation: Peer, change: ConversationChange): Promise<Conversation> {
    const s = await this.waitConnected();
    const input = {
      peerType: conversation.peerType,
      peerId: toId(conversation.peerId),
      setPinned: change.pinned !== undefined,
      pinned: change.pinned ?? false,
      setMuted: change.muted !== undefined,
      muted: change.muted ?? false,
      delete: change.delete ?? false,
    };
    return s.call(PackageType.UPDATE_CONVERSATION, UpdateConversationInputSchema, input, ConversationSchema);
  }

  /**
   * Marks a conversation read up to `readSeq` (the user's list seq; a large group's: the group seq)
   * (PACKAGE_TYPE_MARK_READ); resolves with the conversation, `unread` recounted. The user's other
   * devices get a `read` notice; senders of newly read messages a `receipt` (1:1 and small groups,
   * when the app has receipts on). A `readSeq` not above the current one, or past the last
   * message, is refused with 1006.
   */
  async markRead(conversation: Peer, readSeq: Id): Promise<Conversation> {
    const s = await this.waitConnected();
    const input = { peerType: conversation.peerType, peerId: toId(conversation.peerId), readSeq: toId(readSeq) };
    return s.call(PackageType.MARK_READ, MarkReadInputSchema, input, ConversationSchema);
  }

  /**
   * One page of a conversation's stored messages before `beforeSeq` (0: from the newest), newest
   * first; recalled and deleted copies included without a body (PACKAGE_TYPE_GET_HISTORY). While
   * `hasMore`, ask again with the last message's seq. Emits no events: for a new device's first
   * screen and for scrollback ({@link MessageView.add} takes the messages in any order).
   * @param limit page size; 0 = 20, at most 100.
   */
  async getHistory(conversation: Peer, beforeSeq: Id = 0n, limit = 0): Promise<HistoryPage> {
    const s = await this.waitConnected();
    const input = { peerType: conversation.peerType, peerId: toId(conversation.peerId), beforeSeq: toId(beforeSeq), limit };
    const out = await s.call(PackageType.GET_HISTORY, GetHistoryInputSchema, input, GetHistoryOutputSchema);
    return { messages: out.messages, hasMore: out.hasMore };
  }

  /**
   * Recalls a message from every list holding it (PACKAGE_TYPE_RECALL_MESSAGE): the sender within
   * the app's recall window (1014 after it), a normal group's admin at any time. Every list gets a
   * `recalled` notice; `lists` is 0 when it was recalled already. Resolves after this device's own
   * notice has been delivered, so a {@link MessageView} fed from `message` events shows the change.
   */
  recall(messageId: Id): Promise<MessageChangeOutput> {
    return this.changeMessage(PackageType.RECALL_MESSAGE, messageId);
  }

  /**
   * Replaces a message's body in every list holding a copy not deleted (PACKAGE_TYPE_EDIT_MESSAGE);
   * who may: as {@link recall}. A recalled message is 1006. Every list gets an `edited` notice with
   * the new body and edit version; resolves after this device's own notice has been delivered.
   */
  edit(messageId: Id, body: string | MessageInitShape<typeof MessageBodySchema>): Promise<MessageChangeOutput> {
    return this.changeMessage(PackageType.EDIT_MESSAGE, messageId, typeof body === "string" ? textBody(body) : body);
  }

  /**
   * Deletes the user's own copy of a message (delete-for-me, PACKAGE_TYPE_DELETE_MESSAGE): it
   * becomes a tombstone (status DELETED, no body); other users' copies are unaffected. The user's
   * devices get a `deleted` notice; resolves after this device's own has been delivered.
   */
  deleteForMe(messageId: Id): Promise<MessageChangeOutput> {
    return this.changeMessage(PackageType.DELETE_MESSAGE, messageId);
  }

  private async changeMessage(
    type: PackageType,
    messageId: Id,
    messageBody?: MessageInitShape<typeof MessageBodySchema>,
  ): Promise<MessageChangeOutput> {
    const s = await this.waitConnected();
    const out = await s.call(type, MessageChangeInputSchema, { messageId: toId(messageId), messageBody }, MessageChangeOutputSchema);
    // The calling device gets no push of its own list's notice: fetch it, in order.
    if (out.lists > 0) await this.serial(() => this.syncOn(s)).catch(() => {});
    return out;
  }

  /** Stops the client and closes its connection. */
  close(): void {
    this.stop(new StoppedError("client closed"));
  }

  // --- connection lifecycle -------------------------------------------------------------------

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const endpoint = this.opts.endpoints[this.idx % this.opts.endpoints.length]!;
    let s: Session;
    try {
      // Pushes start after open() returns, so `s` is set by the time the callback runs.
      s = await Session.open(endpoint, this.creds, this.WS, this.opts, (p) => this.onPush(s!, p));
    } catch (e) {
      if (this.stopped) return;
      if (e instanceof GimError && e.code !== GimCode.INTERNAL) {
        // The server refused this identity: retrying cannot help.
        this.emit("failed", { error: e });
        this.stop(e);
        return;
      }
      this.idx += 1;
      this.retryLater(endpoint, (e as Error).message);
      return;
    }
    if (this.stopped) {
      s.close("client stopped");
      return;
    }
    this.session = s;
    void s.closed().then((reason) => this.onClosed(s, reason));
    try {
      await this.serial(() => this.catchUp(s));
    } catch (e) {
      s.close(`sync failed: ${(e as Error).message}`);
      return;
    }
    if (s.isClosed) return;
    this.backoff.reset();
    for (const w of this.sessionWaiters.splice(0)) w.resolve(s);
    this.emit("connected", { endpoint });
  }

  private onClosed(s: Session, reason: string): void {
    if (this.session !== s) return;
    this.session = undefined;
    if (this.stopped) return;
    // The node we lost may be the one that died: another one first.
    this.idx += 1;
    this.retryLater(s.endpoint, reason);
  }

  private retryLater(endpoint: string, reason: string, atLeastMs = 0): void {
    const retryInMs = Math.max(atLeastMs, this.backoff.next());
    this.emit("disconnected", { endpoint, reason, retryInMs });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), retryInMs);
  }

  private stop(why: Error): void {
    if (this.stopped) return;
    this.stopped = why;
    clearTimeout(this.retryTimer);
    clearTimeout(this.gapTimer);
    const s = this.session;
    this.session = undefined;
    s?.close(why.message);
    for (const w of this.sessionWaiters.splice(0)) w.reject(why);
  }

  private onPush(s: Session, p: Push): void {
    switch (p.kind) {
      case "message":
        if (this.queued >= (this.opts.maxQueuedPushes ?? 4096)) {
          // Never grow without bound: the message is stored; a sync brings it back.
          this.overflowed = true;
          return;
        }
        this.queued += 1;
        void this.serial(async () => {
          this.queued -= 1;
          await this.deliverPush(s, p.message);
          if (this.overflowed && this.queued === 0) {
            this.overflowed = false;
            await this.syncOn(s);
          }
        }).catch((e) => this.onTaskError(s, e));
        break;
      case "reconnect": {
        // Bounded so a bad value cannot park the client for long.
        const afterMs = Math.min(Math.max(p.afterMs, 0), 10_000);
        this.emit("reconnect", { endpoint: s.endpoint, reason: p.reason, afterMs });
        if (this.session === s) {
          this.session = undefined;
          s.close(`node draining: ${p.reason}`);
          this.idx += 1;
          this.retryLater(s.endpoint, `node draining: ${p.reason}`, afterMs);
        }
        break;
      }
      case "kicked":
        this.emit("kicked", { reason: p.reason });
        this.stop(new StoppedError(`signed out: the same device signed in elsewhere (${p.reason})`));
        break;
    }
  }

  private onTaskError(s: Session, e: unknown): void {
    if (s.isClosed || isRetryable(e)) {
      // A failed sync leaves a gap only the next catch-up can fill: start over on a new session.
      s.close(`sync failed: ${(e as Error).message}`);
    } else {
      this.emit("error", { error: e as Error });
    }
  }

  // --- delivery state (only ever touched inside the serial queue) ------------------------------

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn);
    this.chain = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  private async catchUp(s: Session): Promise<void> {
    await this.syncOn(s);
    for (const g of [...this.groups.keys()]) {
      try {
        await this.groupSyncOn(s, g);
      } catch (e) {
        if (s.isClosed || isRetryable(e)) throw e;
        // E.g. removed from the group meanwhile: stop tracking it rather than fail every catch-up.
        this.groups.delete(g);
        this.emit("error", { error: e as Error });
      }
    }
  }

  private async deliverPush(s: Session, m: MessageItem): Promise<void> {
    if (s.isClosed || this.stopped) return;
    if (m.seq === 0n) {
      this.emit("message", m);
      return;
    }
    if (m.receiverType === ReceiverType.LARGE_GROUP) {
      const g = m.receiverId;
      if (!this.groups.has(g)) this.groups.set(g, m.seq - 1n);
      const last = this.groups.get(g)!;
      if (m.seq <= last) return;
      if (m.seq === last + 1n) {
        this.groups.set(g, m.seq);
        this.emit("message", m);
        return;
      }
      await this.groupSyncOn(s, g);
      return;
    }
    this.offer(m);
    // Missed, or still being stored: a sync brings what is stored.
    if (this.list.hasGap) await this.syncOn(s);
    this.ackOn(s);
    this.armGapTimer(s);
  }

  /** Hands one message of the user's list to the order keeper; emits what it releases. */
  private offer(m: MessageItem): void {
    for (const r of this.list.offer(m)) this.emit("message", r);
  }

  /** While messages are held above a gap: re-sync every 250 ms, give the gap up at its deadline. */
  private armGapTimer(s: Session): void {
    clearTimeout(this.gapTimer);
    const at = this.list.deadline;
    if (at === undefined || s.isClosed || this.stopped) return;
    const inMs = Math.max(0, Math.min(at - Date.now(), 250));
    this.gapTimer = setTimeout(() => {
      void this.serial(async () => {
        if (s.isClosed || this.stopped) return;
        try {
          await this.syncOn(s);
        } catch {
          // The session's loss is handled by its close; a reconnect catches up anyway.
          return;
        }
        for (const r of this.list.skipDue()) this.emit("message", r);
        this.ackOn(s);
        this.armGapTimer(s);
      });
    }, inMs);
  }

  /** Pulls the user's list after the last delivered seq, page by page while `has_more`. */
  private async syncOn(s: Session): Promise<void> {
    // From the contiguous end (a gap's missing seqs may be stored by now); later pages from the
    // highest seq seen, or a gap would fetch the same page forever.
    let from = this.list.last;
    for (;;) {
      const out = await s.call(PackageType.SYNC, SyncInputSchema, { seq: from }, SyncOutputSchema);
      for (const m of out.messages) this.offer(m);
      if (from === 0n) for (const r of this.list.anchor()) this.emit("message", r);
      // has_more without progress would loop forever on a misbehaving server.
      const next = this.list.seen;
      if (!out.hasMore || next <= from) break;
      from = next;
    }
    this.ackOn(s);
    this.armGapTimer(s);
  }

  private async groupSyncOn(s: Session, g: bigint): Promise<void> {
    for (;;) {
      const from = this.groups.get(g) ?? 0n;
      const out = await s.call(PackageType.GROUP_SYNC, GroupSyncInputSchema, { groupId: g, seq: from }, GroupSyncOutputSchema);
      let last = from;
      for (const m of out.messages) {
        if (m.seq > last) {
          last = m.seq;
          this.groups.set(g, last);
          this.emit("message", m);
        }
      }
      if (!out.hasMore || last === from) return;
    }
  }

  private ackOn(s: Session): void {
    const last = this.list.last;
    if (last > this.acked && !s.isClosed) {
      try {
        s.ack(last);
        this.acked = last;
      } catch {
        // The socket is closing; the next session acks after its catch-up.
      }
    }
  }

  private emit<K extends keyof ClientEvents>(event: K, ev: ClientEvents[K]): void {
    this.emitOnly(event, ev);
    if (event === "message") {
      const n = noticeOf(ev as MessageItem);
      if (n) this.emitOnly("notice", n);
    }
  }

  private emitOnly<K extends keyof ClientEvents>(event: K, ev: ClientEvents[K]): void {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        fn(ev);
      } catch (e) {
        // An application listener's bug must not break delivery.
        if (event !== "error") this.emitOnly("error", { error: e as Error });
      }
    }
  }
}
