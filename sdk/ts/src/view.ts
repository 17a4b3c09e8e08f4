// An exactly-once, ordered view of messages per conversation, for rendering and for persisting
// across page loads. GimClient already delivers each message once per session; the view also
// makes replays harmless (a restart from an older saved seq, history pages fetched twice).

import { clone, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { MessageItemSchema, MessageStatus, ReceiverType, type MessageItem } from "./gen/gim/connect/v1/connect_pb.js";
import { noticeOf } from "./client.js";

/**
 * A conversation's key: `u:<peer user id>` for one-to-one chats, `g:<group id>` for groups
 * (normal and large).
 */
export type ConversationKey = string;

/** The conversation a message belongs to, seen by user `self`. */
export function conversationOf(m: MessageItem, self: bigint): ConversationKey {
  if (m.receiverType === ReceiverType.USER) {
    const peer = m.senderId === self ? m.receiverId : m.senderId;
    return `u:${peer}`;
  }
  return `g:${m.receiverId}`;
}

export interface MessageViewOptions {
  /** Messages kept per conversation (default 1000); the oldest go first. */
  maxPerConversation?: number;
}

/**
 * Messages of one user, grouped by conversation, each in seq order of the list it came from (the
 * user's list, or the large group's), each stored once whatever how often it is added.
 */
export class MessageView {
  readonly self: bigint;
  private readonly max: number;
  private readonly convs = new Map<ConversationKey, MessageItem[]>();
  // Dedupe keys: `<list>:<seq>` where the list is the user's (`u`) or a large group (`g<id>`).
  private readonly seen = new Set<string>();
  private readonly order: ConversationKey[] = [];

  constructor(self: bigint | number | string, opts: MessageViewOptions = {}) {
    this.self = BigInt(self);
    this.max = Math.max(1, opts.maxPerConversation ?? 1000);
  }

  /**
   * Adds a message; returns its conversation when it was new, undefined when it was a duplicate
   * or not persisted (seq 0 messages, e.g. typing notices, are not kept).
   *
   * gim conversation notices ({@link noticeOf}) are not kept as messages: a recall, edit or
   * delete-for-me notice is applied to the copy it names if the view holds it (recalled: status
   * RECALL, no body; edited: the new body and edit version; deleted: status DELETED, no body), and
   * `add` then returns that copy's conversation; otherwise (read, receipt, updated notices, or a
   * copy not held) undefined.
   */
  add(m: MessageItem): ConversationKey | undefined {
    if (m.seq === 0n) return undefined;
    const key = dedupeKey(m);
    if (this.seen.has(key)) return undefined;
    const n = noticeOf(m);
    if (n) {
      // Notices are in no conversation's history; one applied twice changes nothing more.
      if (n.kind !== "recalled" && n.kind !== "edited" && n.kind !== "deleted") return undefined;
      const d = n.data;
      const conv: ConversationKey = d.peerType === ReceiverType.USER ? `u:${d.peerId}` : `g:${d.peerId}`;
      const list = this.convs.get(conv);
      const i = list ? list.findIndex((x) => (d.seq > 0n ? x.seq === d.seq : x.messageId === d.messageId)) : -1;
      if (!list || i < 0 || list[i]!.messageId !== d.messageId) return undefined;
      const c = clone(MessageItemSchema, list[i]!);
      if (n.kind === "edited") {
        // An older edit arriving late must not undo a newer one.
        if (c.status === MessageStatus.RECALL || c.status === MessageStatus.DELETED || d.editVersion <= c.editVersion) return undefined;
        c.messageBody = d.messageBody;
        c.editVersion = d.editVersion;
      } else {
        const status = n.kind === "recalled" ? MessageStatus.RECALL : MessageStatus.DELETED;
        if (c.status === status) return undefined;
        c.status = n.kind === "recalled" ? MessageStatus.RECALL : MessageStatus.DELETED;
        c.messageBody = undefined;
        c.toUserIds = [];
      }
      list[i] = c;
      return conv;
    }
    this.seen.add(key);
    const conv = conversationOf(m, this.self);
    let list = this.convs.get(conv);
    if (!list) this.convs.set(conv, (list = []));
    // Usually an append; history fetched backwards lands in place.
    let i = list.length;
    while (i > 0 && list[i - 1]!.seq > m.seq) i -= 1;
    list.splice(i, 0, m);
    if (list.length > this.max) {
      for (const old of list.splice(0, list.length - this.max)) this.seen.delete(dedupeKey(old));
    }
    const at = this.order.indexOf(conv);
    if (at >= 0) this.order.splice(at, 1);
    this.order.push(conv);
    return conv;
  }

  /** A conversation's messages in seq order. */
  messages(conv: ConversationKey): readonly MessageItem[] {
    return this.convs.get(conv) ?? [];
  }

  /** Conversations, the most recently active last. */
  conversations(): readonly ConversationKey[] {
    return this.order;
  }

  /** The view as JSON (64-bit ids as decimal strings), e.g. for localStorage. */
  toJSON(): JsonValue {
    const messages: JsonValue[] = [];
    for (const conv of this.order) for (const m of this.convs.get(conv)!) messages.push(toJson(MessageItemSchema, m));
    return { self: this.self.toString(), messages };
  }

  /** Restores a view saved with {@link toJSON}. */
  static fromJSON(json: JsonValue, opts: MessageViewOptions = {}): MessageView {
    const o = json as { self: string; messages: JsonValue[] };
    const v = new MessageView(BigInt(o.self), opts);
    for (const m of o.messages) v.add(fromJson(MessageItemSchema, m));
    return v;
  }
}

function dedupeKey(m: MessageItem): string {
  return m.receiverType === ReceiverType.LARGE_GROUP ? `g${m.receiverId}:${m.seq}` : `u:${m.seq}`;
}
