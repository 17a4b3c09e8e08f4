// One signed-in WebSocket connection to a conn node: sign-in by first frame (browsers cannot set
// upgrade headers), request/reply matching by request_id, heartbeats, and pushes handed to the
// owner. It does not reconnect; GimClient does.

import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import {
  InputSchema,
  KickNoticeSchema,
  MessageACKSchema,
  MessageSchema,
  OutputSchema,
  PackageType,
  ReconnectNoticeSchema,
  SignInInputSchema,
  type MessageItem,
  type Output,
} from "./gen/gim/connect/v1/connect_pb.js";
import { ClosedError, ConnectError, GimError, TimeoutError } from "./errors.js";

/** What the SDK needs of a WebSocket: the browser's, or the `ws` package's in Node. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Who signs in: a device token minted by the app's business server. */
export interface Credentials {
  appId: bigint;
  userId: bigint;
  deviceId: bigint;
  token: string;
}

export interface SessionOptions {
  /** Opening the socket plus the sign-in reply (default 5000 ms). */
  connectTimeoutMs?: number;
  /** How long a request waits for its reply (default 10000 ms). */
  requestTimeoutMs?: number;
  /**
   * Heartbeat period (default 30000 ms; 0 = none). A heartbeat without a reply closes the session,
   * so a dead peer is noticed without waiting for TCP. Keep it well under the server's idle
   * timeout (12 min on WebSocket by default).
   */
  heartbeatMs?: number;
  /** Requests awaiting replies at once (default 1024); beyond, requests fail at once. */
  maxPending?: number;
}

/** Something the server sent without being asked. */
export type Push =
  | { kind: "message"; message: MessageItem }
  | { kind: "reconnect"; reason: string; afterMs: number }
  | { kind: "kicked"; reason: string };

const OPEN = 1;

interface Waiter {
  resolve(out: Output): void;
  reject(e: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

/** A signed-in connection. Open it with {@link Session.open}. */
export class Session {
  readonly endpoint: string;
  private readonly ws: WebSocketLike;
  private readonly pending = new Map<bigint, Waiter>();
  private nextId = 1n;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private reason: string | undefined;
  private readonly requestTimeoutMs: number;
  private readonly maxPending: number;
  private onPush: (p: Push) => void = () => {};
  private readonly closedWaiters: Array<(reason: string) => void> = [];

  private constructor(endpoint: string, ws: WebSocketLike, opts: SessionOptions) {
    this.endpoint = endpoint;
    this.ws = ws;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
    this.maxPending = opts.maxPending ?? 1024;
  }

  /**
   * Opens the socket, signs in with a SIGN_IN envelope as the first frame and starts the
   * heartbeat. A refused sign-in rejects with the server's {@link GimError} (e.g. 1002).
   * `onPush` receives pushes in arrival order, from the moment the sign-in is accepted.
   */
  static async open(
    endpoint: string,
    creds: Credentials,
    WS: WebSocketConstructor,
    opts: SessionOptions,
    onPush: (p: Push) => void,
  ): Promise<Session> {
    const connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
    let ws: WebSocketLike;
    try {
      ws = new WS(endpoint);
    } catch (e) {
      throw new ConnectError(endpoint, String(e));
    }
    ws.binaryType = "arraybuffer";
    const s = new Session(endpoint, ws, opts);
    ws.onmessage = (ev) => s.onFrame(ev.data);
    ws.onclose = (ev) => s.finish(ev && ev.code ? `socket closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ""})` : "socket closed");
    ws.onerror = () => {
      // The close event follows with the details a browser is allowed to give.
    };
    const timer = setTimeout(() => s.close(`no sign-in within ${connectTimeoutMs} ms`), connectTimeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        ws.onopen = () => resolve();
        s.closedWaiters.push((r) => reject(new ConnectError(endpoint, r)));
      });
      await s.request(PackageType.SIGN_IN, SignInInputSchema, {
        appId: creds.appId,
        userId: creds.userId,
        deviceId: creds.deviceId,
        token: creds.token,
      });
    } catch (e) {
      s.close(`sign-in failed: ${(e as Error).message}`);
      throw e instanceof ClosedError ? new ConnectError(endpoint, e.message) : e;
    } finally {
      clearTimeout(timer);
    }
    s.onPush = onPush;
    const every = opts.heartbeatMs ?? 30_000;
    if (every > 0) {
      s.heartbeat = setInterval(() => {
        s.request(PackageType.HEARTBEAT).catch((e) => s.close(`heartbeat failed: ${(e as Error).message}`));
      }, every);
    }
    return s;
  }

  /** Why the session ended, once it has. */
  get closeReason(): string | undefined {
    return this.reason;
  }

  get isClosed(): boolean {
    return this.reason !== undefined;
  }

  /** Resolves with the reason when the connection is gone, for whatever cause. */
  closed(): Promise<string> {
    if (this.reason !== undefined) return Promise.resolve(this.reason);
    return new Promise((resolve) => this.closedWaiters.push(resolve));
  }

  /**
   * Sends one request and resolves with the reply's data. A non-zero reply code rejects with
   * {@link GimError}; a closed connection with {@link ClosedError}; no reply in time with
   * {@link TimeoutError}.
   */
  request<D extends DescMessage>(type: PackageType, schema?: D, body?: MessageInitShape<D>): Promise<Uint8Array> {
    if (this.reason !== undefined || this.ws.readyState !== OPEN) {
      return Promise.reject(new ClosedError(this.reason ?? "not connected"));
    }
    if (this.pending.size >= this.maxPending) {
      return Promise.reject(new ClosedError(`more than ${this.maxPending} requests in flight`));
    }
    const requestId = this.nextId++;
    const data = schema ? toBinary(schema, create(schema, body)) : new Uint8Array();
    return new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new TimeoutError(PackageType[type] ?? String(type), this.requestTimeoutMs));
      }, this.requestTimeoutMs);
      this.pending.set(requestId, {
        resolve: (out) => (out.code !== 0 ? reject(new GimError(out.code, out.message, Number(out.retryAfterMs))) : resolve(out.data)),
        reject,
        timer,
      });
      this.ws.send(toBinary(InputSchema, create(InputSchema, { type, requestId, data })));
    });
  }

  /** {@link request}, decoding the reply as `out`. */
  async call<I extends DescMessage, O extends DescMessage>(
    type: PackageType,
    schema: I,
    body: MessageInitShape<I>,
    out: O,
  ): Promise<MessageShape<O>> {
    return fromBinary(out, await this.request(type, schema, body));
  }

  /** Acknowledges every message of the user's list up to `seq` for this device (no reply). */
  ack(seq: bigint): void {
    if (this.reason !== undefined || this.ws.readyState !== OPEN) throw new ClosedError(this.reason);
    const data = toBinary(MessageACKSchema, create(MessageACKSchema, { deviceAck: seq, receiveTime: BigInt(Date.now()) }));
    this.ws.send(toBinary(InputSchema, create(InputSchema, { type: PackageType.MESSAGE, requestId: 0n, data })));
  }

  /** Closes the connection; pending requests fail with {@link ClosedError}. */
  close(reason = "closed by the client"): void {
    if (this.reason === undefined) {
      try {
        this.ws.close(1000);
      } catch {
        // Closing a socket that never opened throws in some implementations; it is gone either way.
      }
    }
    this.finish(reason);
  }

  private finish(reason: string): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    clearInterval(this.heartbeat);
    for (const w of this.pending.values()) {
      clearTimeout(w.timer);
      w.reject(new ClosedError(reason));
    }
    this.pending.clear();
    for (const w of this.closedWaiters.splice(0)) w(reason);
  }

  private onFrame(data: unknown): void {
    // Text frames carry no envelope (the server never sends them).
    if (!(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)) return;
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    let out: Output;
    try {
      out = fromBinary(OutputSchema, bytes);
    } catch (e) {
      this.close(`undecodable envelope: ${(e as Error).message}`);
      return;
    }
    if (out.requestId !== 0n) {
      const w = this.pending.get(out.requestId);
      if (w) {
        this.pending.delete(out.requestId);
        clearTimeout(w.timer);
        w.resolve(out);
      }
      return;
    }
    try {
      switch (out.type) {
        case PackageType.MESSAGE: {
          const m = fromBinary(MessageSchema, out.data).message;
          if (m) this.onPush({ kind: "message", message: m });
          break;
        }
        case PackageType.RECONNECT: {
          const n = fromBinary(ReconnectNoticeSchema, out.data);
          this.onPush({ kind: "reconnect", reason: n.reason, afterMs: Number(n.afterMs) });
          break;
        }
        case PackageType.KICKED: {
          const n = fromBinary(KickNoticeSchema, out.data);
          this.onPush({ kind: "kicked", reason: n.reason });
          break;
        }
        default:
          // Unknown or unsolicited packets from a newer server are ignored, not fatal.
          break;
      }
    } catch (e) {
      this.close(`undecodable push: ${(e as Error).message}`);
    }
  }
}
