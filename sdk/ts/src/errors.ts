// Errors the SDK raises. Server answers carry a gim code (1002 and up business errors, 1001
// internal), so applications branch on `code` instead of parsing messages.

/** Business error codes of gim (`Output.code` on the socket, `x-gim-code` on gRPC). */
export const GimCode = {
  INTERNAL: 1001,
  UNAUTHORIZED: 1002,
  NOT_FRIENDS: 1003,
  NOT_IN_GROUP: 1004,
  DEVICE_NOT_BOUND: 1005,
  BAD_REQUEST: 1006,
  USER_ALREADY_EXISTS: 1007,
  GROUP_ALREADY_EXISTS: 1008,
  GROUP_NOT_FOUND: 1009,
  USER_NOT_FOUND: 1010,
  /** Over the app's rate limit: wait `GimError.retryAfterMs` before sending again. */
  RATE_LIMITED: 1011,
  /** Recall, edit, delete: no message with that id in the caller's list. */
  MESSAGE_NOT_FOUND: 1012,
  /** Recall, edit: the caller neither sent the message nor administers its group. */
  NOT_MESSAGE_SENDER: 1013,
  /** Recall, edit: the sender is past the app's recall window. */
  RECALL_WINDOW_PASSED: 1014,
  /** The receiver has blocked the sender (1:1 sends). */
  BLOCKED: 1020,
  /** The app is suspended. */
  APP_SUSPENDED: 1021,
  /** The user is suspended. */
  USER_SUSPENDED: 1022,
} as const;

/** The server answered a request with a non-zero code. */
export class GimError extends Error {
  readonly code: number;
  /** With 1011 (rate limited): how long to wait before trying again, in ms; 0 otherwise. */
  readonly retryAfterMs: number;
  constructor(code: number, message: string, retryAfterMs = 0) {
    super(`${message || "error"} (gim code ${code})`);
    this.name = "GimError";
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

/** The connection ended before the answer came. */
export class ClosedError extends Error {
  constructor(reason = "connection closed") {
    super(reason);
    this.name = "ClosedError";
  }
}

/** No answer within the request timeout. */
export class TimeoutError extends Error {
  constructor(what: string, ms: number) {
    super(`${what}: no answer within ${ms} ms`);
    this.name = "TimeoutError";
  }
}

/** The socket could not be opened. */
export class ConnectError extends Error {
  constructor(endpoint: string, reason: string) {
    super(`cannot reach ${endpoint}: ${reason}`);
    this.name = "ConnectError";
  }
}

/** The client was stopped (closed, kicked, or its sign-in refused). */
export class StoppedError extends Error {
  constructor(reason = "client stopped") {
    super(reason);
    this.name = "StoppedError";
  }
}

/**
 * Whether the same call can succeed after a reconnect: transport trouble and 1001 (internal),
 * never a business error.
 */
export function isRetryable(e: unknown): boolean {
  // Business codes run from 1002 (1011 rate limiting, 1020-1029 blocks, suspension and
  // revocation); none of them succeeds by asking again at once.
  if (e instanceof GimError) return e.code === GimCode.INTERNAL || e.code < 1001 || e.code >= 1100;
  return e instanceof ClosedError || e instanceof TimeoutError || e instanceof ConnectError;
}
