export {
  HeraldClient,
  Subscription,
  type HeraldClientOptions,
  type HeraldClientEvents,
  type HeraldMessage,
  type MessageHandler,
  type SubscribeOptions,
  type SubscribedEvent,
  type SubscriptionEvents,
  type RecoveredEvent,
  type ConnectionState,
  type StateName,
  type WebSocketLike,
  type WebSocketConstructor,
} from "./client.js";
export {
  CLOSE_CODES,
  CloseCode,
  closeAction,
  closeCodeInfo,
  closeNeedsNewToken,
  type CloseAction,
  type CloseCodeInfo,
} from "./closeCodes.js";
export { Backoff, type BackoffOptions, type BackoffStep } from "./backoff.js";
export {
  parseServerFrame,
  encodeClientFrame,
  FrameError,
  type Position,
  type ClientFrame,
  type ServerFrame,
  type ConnectedFrame,
  type SubscribedFrame,
  type MessageFrame,
  type UnsubscribedFrame,
  type PongFrame,
  type ErrorFrame,
  type ErrorCode,
  type SubscribeEntry,
} from "./frames.js";
export { ChannelPositions, isDuplicate, type Verdict } from "./positions.js";
