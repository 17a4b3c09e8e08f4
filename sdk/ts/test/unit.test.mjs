// Pieces of the SDK that need no server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import {
  Backoff, ClosedError, GimError, MessageItemSchema, MessageView, ReceiverType, TimeoutError, isRetryable, textBody, textOf,
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
