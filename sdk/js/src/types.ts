/** A channel's position: the last publication a client has seen. */
export interface Position {
  epoch: string;
  offset: number;
}

/** One message on one channel, as Herald pushes it on both transports and in history. */
export interface Publication<T = unknown> {
  channel: string;
  event: string;
  epoch: string;
  offset: number;
  /** Publication time, milliseconds since the Unix epoch. */
  time: number;
  data: T;
}

/** A presence member: a connection, or (with `presence = "users"`) a user. */
export interface Member {
  conn_id?: string;
  user_id?: string;
  info?: unknown;
  transport?: "ws" | "sse";
}

/** Totals of a channel's subscribers (`presence = "counts"`, or a `presence` request). */
export interface Counts {
  connections: number;
  users: number;
  anonymous: number;
}

/** Why a subscription was told that publications were lost. */
export type ResetReason = "beyond_retention" | "epoch_changed" | (string & {});

/** The connection's state. `disconnected` will retry; `closed` will not. */
export type State = "connecting" | "connected" | "disconnected" | "closed";

/** Which transport carries the connection. */
export type TransportName = "websocket" | "sse";

/** What came with a change of state. */
export interface StateChange {
  state: State;
  previous: State;
  transport?: TransportName;
  /** A close code (Herald's 4000-4999, or a WebSocket code), when the change came from one. */
  code?: number;
  /** Why: the server's reason, an error's message, or what the app asked for. */
  reason?: string;
  /** Set when the connection will try again, in milliseconds from now. */
  retryIn?: number;
}

/** The server's hello, first on every connection. */
export interface Hello {
  conn_id: string;
  node: string;
  time: number;
  ping_interval_ms: number;
}

/** The answer to `subscribe`: where the live stream continues from. */
export interface Subscribed {
  channel: string;
  position: Position;
  /** True when the client resumed and got everything it missed. */
  recovered: boolean;
  transport: TransportName;
}

/** An error with Herald's stable code (`unauthorized`, `rate_limited`, `unavailable_over_sse`...). */
export class HeraldError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "HeraldError";
  }
}
