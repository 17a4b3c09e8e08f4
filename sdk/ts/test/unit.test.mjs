// Pieces of the SDK that need no server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { create, toBinary } from '@bufbuild/protobuf';
import {
  Backoff, ClosedError, ConversationCommand, GimError, MessageChangeNoticeSchema, MessageItemSchema, MessageStatus, MessageType,
  MessageView, ReadNoticeSchema, ReceiverType, SenderType, TimeoutError, isRetryable, noticeOf, textBody, textOf,
} from '../dist/index.js';

test('back-off doubles up to its cap, stays within [d/2, d], and resets', () => {
  const lo = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0 });
  const hi = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.999999 });
  assert.deepEqual(Array.from({ length: 6 }, () => lo.next()), [50, 100, 200, 400, 500, 500]);
  assert.deepEqual(Array.from({ length: 6 }, () => hi.next()), [100, 200, 400, 800, 1000, 1000]);
  lo.reset();
  assert.equal(lo.next(), 50);
  // Real randomness spreads clients out.
  const spread = new Set(Array.from({ length: 50 }, () => new Backoff({ initialMs: 1000 }).next()));
  assert.ok(spread.size > 10);
});

test('retryable: transport trouble and 1001, never business errors', () => {
  assert.ok(isRetryable(new ClosedError()));
  assert.ok(isRetryable(new TimeoutError('x', 1)));
  assert.ok(isRetryable(new GimError(1001, 'internal')));
  assert.ok(!isRetryable(new GimError(1010, 'no user')));
  assert.ok(!isRetryable(new Error('other')));
});

const msg = (over) => create(MessageItemSchema, { receiverType: ReceiverType.USER, messageBody: textBody('x'), ...over });

test('the view keeps each message once, per conversation, in seq order', () => {
  const v = new MessageView(1n, { maxPerConversation: 3 });
  assert.equal(v.add(msg({ seq: 2n, senderId: 2n, receiverId: 1n })), 'u:2');
  assert.equal(v.add(msg({ seq: 2n, senderId: 2n, receiverId: 1n })), undefined, 'duplicate');
  assert.equal(v.add(msg({ seq: 0n, senderId: 2n, receiverId: 1n })), undefined, 'not persisted');
  v.add(msg({ seq: 1n, senderId: 1n, receiverId: 2n }));
  v.add(msg({ seq: 3n, senderId: 3n, receiverId: 1n }));
  v.add(msg({ seq: 4n, receiverType: ReceiverType.NORMAL_GROUP, senderId: 2n, receiverId: 9n }));
  // A large group's seqs are its own list's: seq 2 there is not seq 2 of the user's list.
  assert.equal(v.add(msg({ seq: 2n, receiverType: ReceiverType.LARGE_GROUP, senderId: 2n, receiverId: 7n })), 'g:7');
  assert.deepEqual(v.messages('u:2').map((m) => m.seq), [1n, 2n]);
  assert.deepEqual(v.conversations(), ['u:2', 'u:3', 'g:9', 'g:7']);
  for (let s = 10n; s < 14n; s++) v.add(msg({ seq: s, senderId: 2n, receiverId: 1n }));
  assert.deepEqual(v.messages('u:2').map((m) => m.seq), [11n, 12n, 13n], 'bounded: the oldest go');
  const back = MessageView.fromJSON(JSON.parse(JSON.stringify(v.toJSON())));
  assert.deepEqual(back.messages('u:2').map((m) => m.seq), [11n, 12n, 13n]);
  assert.equal(textOf(back.messages('g:7')[0]), 'x');
  assert.equal(back.add(msg({ seq: 12n, senderId: 2n, receiverId: 1n })), undefined);
});

test('order: a seq above a gap waits for the gap, then both go out in order', async () => {
  const { Ordered } = await import('../dist/index.js');
  let now = 1000;
  const o = new Ordered(3n, 3000, () => now);
  const seqs = (v) => v.map((m) => m.seq);
  assert.deepEqual(seqs(o.offer({ seq: 5n })), []);
  assert.equal(o.last, 3n);
  assert.equal(o.seen, 5n);
  assert.ok(o.hasGap);
  assert.deepEqual(seqs(o.offer({ seq: 4n })), [4n, 5n]);
  assert.equal(o.last, 5n);
  assert.equal(o.deadline, undefined);
  assert.deepEqual(seqs(o.offer({ seq: 4n })), [], 'a duplicate is dropped');
});

test('order: a gap is skipped after the wait; a skipped seq arriving late still comes once', async () => {
  const { Ordered } = await import('../dist/index.js');
  let now = 1000;
  const o = new Ordered(3n, 3000, () => now);
  const seqs = (v) => v.map((m) => m.seq);
  o.offer({ seq: 6n });
  now = 2000;
  o.offer({ seq: 8n });
  now = 3999;
  assert.deepEqual(seqs(o.skipDue()), []);
  now = 4000;
  assert.deepEqual(seqs(o.skipDue()), [6n]);
  assert.equal(o.deadline, 7000, 'the gap at 7 waits its own full time');
  now = 7000;
  assert.deepEqual(seqs(o.skipDue()), [8n]);
  assert.deepEqual(seqs(o.offer({ seq: 5n })), [5n]);
  assert.deepEqual(seqs(o.offer({ seq: 5n })), []);
  assert.deepEqual(seqs(o.offer({ seq: 2n })), [], 'never skipped: a duplicate');
});

test('order: an unknown start is anchored by a sync, not by the first push', async () => {
  const { Ordered } = await import('../dist/index.js');
  const o = new Ordered(0n, 3000, () => 0);
  const seqs = (v) => v.map((m) => m.seq);
  assert.deepEqual(o.anchor(), [], 'nothing to anchor on');
  // Pushes of 2 and 3 overtook 1's.
  assert.deepEqual(seqs(o.offer({ seq: 3n })), []);
  assert.deepEqual(seqs(o.offer({ seq: 2n })), []);
  assert.ok(o.hasGap, 'so that the client syncs');
  // The sync from 0 returns 1 (and the rest).
  assert.deepEqual(seqs(o.offer({ seq: 1n })), []);
  assert.deepEqual(seqs(o.anchor()), [1n, 2n, 3n]);
  assert.equal(o.last, 3n);
  assert.deepEqual(o.anchor(), [], 'anchored once');
  assert.deepEqual(seqs(o.offer({ seq: 1n })), [], 'a duplicate after anchoring');
});

/** A gim notice message at `seq` of the user's list, as the server stores it. */
const notice = (seq, code, schema, data) => msg({
  seq, senderType: SenderType.SYSTEM, senderId: 2n, receiverId: 2n,
  messageBody: {
    messageType: MessageType.COMMAND,
    messageContent: { content: { case: 'command', value: { code, data: toBinary(schema, create(schema, data)) } } },
  },
});
const change = (seq, code, data) => notice(seq, code, MessageChangeNoticeSchema, { peerType: ReceiverType.USER, peerId: 2n, ...data });

test('noticeOf decodes gim notices and leaves other messages alone', () => {
  const r = noticeOf(notice(5n, ConversationCommand.RECEIPT, ReadNoticeSchema, { readerId: 2n, messageId: 77n }));
  assert.equal(r.kind, 'receipt');
  assert.equal(r.data.messageId, 77n);
  assert.equal(noticeOf(change(6n, ConversationCommand.RECALLED, { messageId: 1n, seq: 1n })).kind, 'recalled');
  assert.equal(noticeOf(msg({ seq: 1n })), undefined, 'a text');
  // An application's own command (code 1000 and up) is not a gim notice.
  const app = notice(7n, 1000, ReadNoticeSchema, {});
  assert.equal(noticeOf(app), undefined);
  assert.equal(noticeOf(msg({ ...app, senderType: SenderType.USER, messageBody: app.messageBody })), undefined, 'not from SYSTEM');
});

test('the view applies recall, edit and delete notices to the copies it holds, and keeps no notices', () => {
  const v = new MessageView(1n);
  v.add(msg({ seq: 1n, senderId: 2n, receiverId: 1n, messageId: 101n, toUserIds: [1n] }));
  v.add(msg({ seq: 2n, senderId: 1n, receiverId: 2n, messageId: 102n, messageBody: textBody('two') }));
  v.add(msg({ seq: 3n, senderId: 2n, receiverId: 1n, messageId: 103n }));
  const held = v.messages('u:2')[0];
  assert.equal(v.add(change(4n, ConversationCommand.RECALLED, { messageId: 101n, seq: 1n })), 'u:2');
  const recalled = v.messages('u:2')[0];
  assert.equal(recalled.status, MessageStatus.RECALL);
  assert.equal(recalled.messageBody, undefined);
  assert.deepEqual(recalled.toUserIds, []);
  assert.equal(textOf(held), 'x', 'the message handed out earlier is not mutated');
  assert.equal(v.add(change(4n, ConversationCommand.RECALLED, { messageId: 101n, seq: 1n })), undefined, 'applied once');

  assert.equal(v.add(change(5n, ConversationCommand.EDITED, { messageId: 102n, seq: 2n, editVersion: 2n, messageBody: textBody('two v2') })), 'u:2');
  // An older edit arriving after a newer one changes nothing.
  assert.equal(v.add(change(6n, ConversationCommand.EDITED, { messageId: 102n, seq: 2n, editVersion: 1n, messageBody: textBody('two v1') })), undefined);
  assert.equal(textOf(v.messages('u:2')[1]), 'two v2');
  assert.equal(v.messages('u:2')[1].editVersion, 2n);
  // A recalled message is not edited back.
  assert.equal(v.add(change(7n, ConversationCommand.EDITED, { messageId: 101n, seq: 1n, editVersion: 1n, messageBody: textBody('back') })), undefined);

  assert.equal(v.add(change(8n, ConversationCommand.DELETED, { messageId: 103n, seq: 3n })), 'u:2');
  assert.equal(v.messages('u:2')[2].status, MessageStatus.DELETED);
  assert.equal(v.messages('u:2')[2].messageBody, undefined);
  // A notice for a copy the view does not hold, a read notice: nothing kept, nothing changed.
  assert.equal(v.add(change(9n, ConversationCommand.RECALLED, { messageId: 999n, seq: 99n })), undefined);
  assert.equal(v.add(notice(10n, ConversationCommand.READ, ReadNoticeSchema, { peerType: ReceiverType.USER, peerId: 2n, readSeq: 3n })), undefined);
  assert.deepEqual(v.messages('u:2').map((m) => m.seq), [1n, 2n, 3n]);
  assert.deepEqual(v.conversations(), ['u:2']);
});
