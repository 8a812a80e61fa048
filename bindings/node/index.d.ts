// Types of the resilient-amqp Node binding (index.js).

/** Connection options (the library's, camelCase), plus waitConnectedMs. */
export interface ConnectOptions {
  reconnectDelayMs?: number;
  reconnectDelayMaxMs?: number;
  maxReconnects?: number;
  maxBuffered?: number;
  maxBufferedBytes?: number;
  maxMessageBytes?: number;
  /** How long connect() waits for the first connection (default 10000; 0: not at all). */
  waitConnectedMs?: number;
}

/** Queue options (the library's, camelCase; 'arg.NAME' / 'consumer_arg.NAME' as is). */
export interface QueueOptions {
  exchange?: string;
  routingKey?: string;
  durable?: boolean;
  persistent?: boolean;
  mandatory?: boolean;
  exchangeType?: string;
  queueType?: 'classic' | 'quorum' | 'stream';
  passive?: boolean;
  exclusive?: boolean;
  autoDelete?: boolean;
  messageTtlMs?: number;
  expiresMs?: number;
  maxLength?: number;
  maxLengthBytes?: number;
  overflow?: string;
  deadLetterExchange?: string;
  deadLetterRoutingKey?: string;
  maxPriority?: number;
  singleActiveConsumer?: boolean;
  consumerName?: string;
  consumerPriority?: number;
  consumerExclusive?: boolean;
  prefetch?: number;
  invalidDisposition?: 'requeue' | 'reject';
  publishRetries?: number;
  publishTimeoutMs?: number;
  topologyCheckMs?: number;
  maxBuffered?: number;
  maxBufferedBytes?: number;
  [key: string]: string | number | boolean | undefined;
}

/** A header value with an explicit AMQP type (from `types`). */
export class Typed {
  kind: number;
  value: number | bigint | string | Date | Buffer;
  scale?: number;
}

export type HeaderValue =
  | null | boolean | number | bigint | string | Buffer | Uint8Array | Date | Typed
  | HeaderValue[] | { [key: string]: HeaderValue };

export interface Properties {
  contentType?: string;
  contentEncoding?: string;
  /** 1 transient, 2 persistent (default: the queue's `persistent`). */
  deliveryMode?: number;
  priority?: number;
  correlationId?: string;
  replyTo?: string;
  expiration?: string | number;
  messageId?: string;
  timestamp?: Date | number;
  type?: string;
  userId?: string;
  appId?: string;
}

export interface PublishProperties extends Properties {
  headers?: { [key: string]: HeaderValue };
  /** Shorthand for deliveryMode 2 (true) or 1 (false). */
  persistent?: boolean;
  /** A routing key of its own (default: the queue's binding key). */
  routingKey?: string;
}

export declare const types: {
  int8(v: number): Typed; uint8(v: number): Typed; int16(v: number): Typed; uint16(v: number): Typed;
  int32(v: number): Typed; uint32(v: number): Typed; int64(v: number | bigint): Typed;
  float(v: number): Typed; double(v: number): Typed; decimal(value: number, scale: number): Typed;
  timestamp(v: Date | number): Typed; bytes(v: Buffer | Uint8Array | string): Typed; string(v: string): Typed;
};

export class AmqpError extends Error {
  /** The amqp_result name, e.g. 'AMQP_ERR_BUFFER_FULL'. */
  code: string;
  /** The amqp_result number (-1 for a PublishError). */
  errno: number;
  /** The C function that failed. */
  call?: string;
}

export class PublishError extends AmqpError {
  status: 'nacked' | 'refused' | 'too_large' | 'expired' | 'unsent' | 'unroutable';
  reason: string;
  replyCode: number;
  attempts: number;
}

export class Message {
  body: Buffer;
  readonly text: string;
  deliveryId: number;
  deliveryTag: number;
  redelivered: boolean;
  exchange: string;
  routingKey: string;
  properties: Properties;
  headers: { [key: string]: HeaderValue };
}

export declare const ACK: 'ack';
export declare const REJECT: 'reject';
export declare const REQUEUE: 'requeue';
export type Disposition = typeof ACK | typeof REJECT | typeof REQUEUE;

export type Handler = (message: Message) => void | Disposition | Promise<void | Disposition>;

export interface ConsumeOptions {
  /** Handlers (async ones in flight) at once; default: the queue's prefetch. */
  concurrency?: number;
  /** What a throwing handler does: 'requeue' (default) or 'reject'. */
  onError?: 'requeue' | 'reject';
}

export class Consumer {
  handled: number;
  handlerErrors: number;
  stop(timeoutMs?: number): Promise<void>;
  start(): void;
}

export interface QueueStats {
  buffered: number; bufferedBytes: number; inFlight: number; published: number; confirmed: number;
  resent: number; nacked: number; delivered: number; acked: number; rejected: number; requeued: number;
  released: number; unsettled: number; invalidDispositions: number; returnsIgnored: number; failed: number;
  expired: number; refused: number; queueFailed: number; consumeRefusals: number; unroutable: number;
  /** Binding counters: handler calls settled, handlers that threw or rejected, publishConfirmed pending. */
  handled: number; handlerErrors: number; pendingConfirms: number;
}

export interface ConnectionStats {
  state: 'connecting' | 'connected' | 'reconnecting' | 'failed' | 'closed';
  connects: number; failedAttempts: number; consecutiveFailures: number; queues: number;
  protocolErrors: number; consumeConnects: number; consumeFailedAttempts: number;
}

export class Queue {
  readonly name: string;
  publish(body: Buffer | Uint8Array | string, props?: PublishProperties): void;
  publishConfirmed(body: Buffer | Uint8Array | string, props?: PublishProperties): Promise<{ attempts: number }>;
  consume(handler: Handler, options?: ConsumeOptions): Promise<Consumer>;
  stop(timeoutMs?: number): Promise<void>;
  start(): void;
  stats(): QueueStats;
  brokerName(): string;
}

export class Connection {
  queue(name: string, options?: QueueOptions): Promise<Queue>;
  waitConnected(timeoutMs?: number): Promise<void>;
  stats(): ConnectionStats;
  /** Resolves with the number of messages not confirmed. */
  close(timeoutMs?: number): Promise<number>;
}

export interface Logger {
  error(msg: string): void;
  warn(msg: string): void;
  info(msg: string): void;
  debug?(msg: string): void;
}

export function connect(uri: string, options?: ConnectOptions): Promise<Connection>;
export function setLogger(logger: Logger | null, level?: 'error' | 'warn' | 'info' | 'debug' | 'off'): void;
export function abiVersion(): number;
