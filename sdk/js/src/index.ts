export { HeraldClient, expiry, type ClientOptions } from "./client.js";
export { Subscription, type SubscriptionHandlers } from "./subscription.js";
export { Backoff, type BackoffOptions } from "./backoff.js";
export { throttle } from "./throttle.js";
export { parseSseId, sinceItem, seen } from "./positions.js";
export { SseParser, type SseMessage } from "./sse.js";
export {
  HeraldError,
  type Counts,
  type Hello,
  type Member,
  type Position,
  type Publication,
  type ResetReason,
  type State,
  type StateChange,
  type Subscribed,
  type TransportName,
} from "./types.js";
