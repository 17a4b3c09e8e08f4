// @gim/sdk: a TypeScript client for gim over WebSocket, for browsers and Node 20.
// Modules: client (GimClient: reconnect, sync, acks, sends), session (one connection), view
// (exactly-once ordered conversations), order (seq order across out-of-order stores), backoff, errors, and the generated socket protocol.

export { GimClient, noticeOf, textBody, textOf } from "./client.js";
export type { ClientEvents, ClientOptions, ConversationChange, HistoryPage, Id, Notice, Peer, SendInput, SendResult } from "./client.js";
export { Session } from "./session.js";
export type { Credentials, Push, SessionOptions, WebSocketConstructor, WebSocketLike } from "./session.js";
export { MessageView, conversationOf } from "./view.js";
export type { ConversationKey, MessageViewOptions } from "./view.js";
export { Backoff } from "./backoff.js";
export { Ordered } from "./order.js";
export type { Sequenced } from "./order.js";
export type { BackoffOptions } from "./backoff.js";
export { ClosedError, ConnectError, GimCode, GimError, StoppedError, TimeoutError, isRetryable } from "./errors.js";
export * from "./gen/gim/connect/v1/connect_pb.js";
