// resilient-amqp for Node.js: the C library through koffi, consumed in pull
// mode from the event loop (see lib/reactor.js), so no JavaScript ever runs
// on a library thread except the log function (see setLogger).
'use strict';
const {
  native, koffi, QueueStats, ConnectionStats, LogFn, QUEUE_STATS,
} = require('./lib/native');
const { getReactor } = require('./lib/reactor');
const { types, Typed, encodeMessage, decodeMessage } = require('./lib/codec');

const OK = 0;
const ERR_INVALID_HANDLE = 2;
const ERR_CLOSED = 5;
const ERR_TIMEOUT = 6;
const ERR_STALE_DELIVERY = 10;
const ERR_ALREADY_SETTLED = 11;
const D_ACK = 0x5a01;
const D_REJECT = 0x5a02;
const D_REQUEUE = 0x5a03;
const BATCH = 256;
const ERRCAP = 1024;

/** What a handler may return to settle otherwise than with an ack. */
const ACK = 'ack';
const REJECT = 'reject';
const REQUEUE = 'requeue';

const REPORT_STATUS = ['confirmed', 'nacked', 'refused', 'too_large', 'expired', 'unsent', 'unroutable'];
const STATE_NAMES = ['connecting', 'connected', 'reconnecting', 'failed', 'closed'];

/**
 * An error of the library: `code` is the amqp_result name (e.g.
 * 'AMQP_ERR_INVALID_ARGUMENT'), `errno` its number, `message` the library's
 * text for this very call.
 */
class AmqpError extends Error {
  constructor(code, errno, message, call) {
    super(message || code);
    this.name = 'AmqpError';
    this.code = code;
    this.errno = errno;
    if (call) this.call = call;
  }
}

/**
 * A publishConfirmed that ended without a confirm: `status` is the report's
 * ('nacked', 'refused', 'too_large', 'expired', 'unsent', 'unroutable'),
 * `code` 'AMQP_REPORT_' + status in capitals, `reason` the library's text.
 */
class PublishError extends AmqpError {
  constructor(status, reason, replyCode, attempts) {
    super(`AMQP_REPORT_${status.toUpperCase()}`, -1, reason || status, 'publishConfirmed');
    this.name = 'PublishError';
    this.status = status;
    this.reason = reason || status;
    this.replyCode = replyCode || 0;
    this.attempts = attempts || 0;
  }
}

function codeName(rc) {
  return native().result_str(rc) || `AMQP_ERR_${rc}`;
}

function errText(buf) {
  const end = buf.indexOf(0);
  return buf.toString('utf8', 0, end < 0 ? buf.length : end);
}

/** An AmqpError from a call made on this (the main) thread. */
function lastError(rc, call) {
  const buf = Buffer.alloc(ERRCAP);
  native().last_error(buf, ERRCAP);
  return new AmqpError(codeName(rc), rc, errText(buf), call);
}

function check(rc, call) {
  if (rc !== OK) throw lastError(rc, call);
}

/** Calls an `_e` function on libuv's thread pool; resolves with its result code. */
function callAsync(fn, ...args) {
  return new Promise((resolve, reject) => {
    fn.async(...args, (err, rc) => (err ? reject(err) : resolve(rc)));
  });
}

// ---- logging --------------------------------------------------------------

const LEVELS = { off: 0, error: 1, warn: 2, info: 3, debug: 4 };
let logger = console;
let logLevel = LEVELS.warn;
let logCallback = null;
let logInstalled = false;

function onLibraryLog(level, message) {
  const text = `resilient-amqp: ${message}`;
  try {
    if (level <= 1) logger.error(text);
    else if (level === 2) logger.warn(text);
    else if (level === 3) logger.info(text);
    else (logger.debug || logger.info).call(logger, text);
  } catch (_) { /* a logger that throws must not reach the library */ }
}

/**
 * Routes the library's log (process-wide) to `target` (an object with error,
 * warn, info, debug methods: console, pino, winston...; null: off) at `level`
 * ('error' | 'warn' | 'info' | 'debug' | 'off') and more severe.
 * The library logs from its own thread; koffi hands each line to the main
 * thread (that thread waits meanwhile, never the library's API calls).
 * @param {{error:Function,warn:Function,info:Function,debug?:Function}|null} target
 * @param {string} [level]
 */
function setLogger(target, level = 'warn') {
  const api = native();
  const lvl = target === null ? 0 : LEVELS[level];
  if (lvl === undefined) throw new TypeError(`resilient-amqp: unknown log level '${level}'`);
  logger = target || console;
  logLevel = lvl;
  if (!logCallback) logCallback = koffi.register(onLibraryLog, koffi.pointer(LogFn));
  if (logLevel === 0) {
    api.set_log_callback(null, 0, null);
    logReleased = null;
  } else {
    // A semaphore of its own per installation, posted by the library (libc's
    // sem_post as the release function, on its log thread) once this
    // callback is replaced and its last call returned.
    const sem = koffi.alloc('uint8_t', 64);
    api.libc.sem_init(sem, 0, 0);
    check(api.set_log_callback_ex(logCallback, logLevel, sem, semPost()), 'amqp_set_log_callback_ex');
    logReleased = sem;
  }
  if (!logInstalled) {
    logInstalled = true;
    process.on('beforeExit', drainLogging);
    process.on('exit', stopLogging);
  }
}

let logReleased = null;
let semPostPtr = null;
function semPost() {
  if (!semPostPtr) semPostPtr = native().libc.dlsym(null, 'sem_post');
  return semPostPtr;
}

// The event loop is empty (the process is about to end by draining it):
// turn the callback off and keep the loop alive until the library says its
// last call returned, serving the calls still queued for it meanwhile. Then
// the process ends with no library thread able to call JavaScript.
function drainLogging() {
  const sem = logReleased;
  if (!sem) return;
  logReleased = null;
  const api = native();
  api.set_log_callback(null, 0, null);
  const end = Date.now() + 2000;
  const wait = () => {
    if (api.libc.sem_trywait(sem) === 0 || Date.now() > end) return;
    setTimeout(wait, 1);
  };
  wait();
}

// At exit (process.exit(), an uncaught exception), before Node frees its environment: no library thread may call
// into JavaScript any more. Turn the callback off and wait (bounded) until
// the library says its last call returned. A call blocked waiting for this
// (the main) thread cannot return now: it stays queued, and Node drops it
// with its environment; that log thread then waits for good, harmlessly.
function stopLogging() {
  const api = native();
  api.set_log_callback(null, 0, null);
  const sem = logReleased;
  logReleased = null;
  if (!sem) return;
  const until = Date.now() + 200;
  const ts = Buffer.alloc(16);
  ts.writeBigInt64LE(BigInt(Math.floor(until / 1000)), 0);
  ts.writeBigInt64LE(BigInt((until % 1000) * 1e6), 8);
  api.libc.sem_timedwait(sem, ts);
}

function binding(msg, err) {
  try {
    logger.warn(`resilient-amqp: ${msg}${err ? `: ${err && err.stack ? err.stack : err}` : ''}`);
  } catch (_) { /* ignore */ }
}

// ---- options --------------------------------------------------------------

function snake(k) {
  return k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** {prefetch: 50, autoDelete: true, 'arg.x-queue-mode': 'str:lazy'} -> "prefetch=50&auto_delete=true&..." */
function optionString(opts, skip) {
  const parts = [];
  for (const key of Object.keys(opts || {})) {
    if (skip.includes(key) || opts[key] === undefined) continue;
    const name = key.includes('.') ? key : snake(key);
    parts.push(`${name}=${opts[key]}`);
  }
  return parts.length ? parts.join('&') : null;
}

// ---- connection -----------------------------------------------------------

/**
 * Connects to `uri` in the background and resolves once connected, or
 * after `waitConnectedMs` (default 10000; 0: at once) while it goes on
 * trying (a broker that is down is not an error). Rejects with an AmqpError
 * for a bad URI or option, or when the connection gave up for good (e.g. a
 * refused login).
 * @param {string} uri amqp://user:pass@host:port/vhost
 * @param {object} [options] reconnectDelayMs, reconnectDelayMaxMs, maxReconnects,
 *   maxBuffered, maxBufferedBytes, maxMessageBytes; waitConnectedMs
 * @returns {Promise<Connection>}
 */
async function connect(uri, options = {}) {
  const api = native();
  if (!logCallback) setLogger(console, 'warn');
  const out = [0];
  check(api.connect(uri, optionString(options, ['waitConnectedMs']), out), 'amqp_connect');
  const conn = new Connection(out[0]);
  const wait = options.waitConnectedMs === undefined ? 10000 : options.waitConnectedMs;
  if (wait > 0) {
    try {
      await conn.waitConnected(wait);
    } catch (e) {
      if (e.code !== 'AMQP_ERR_TIMEOUT') {
        await conn.close(0).catch(() => {});
        throw e;
      }
    }
  }
  return conn;
}

class Connection {
  constructor(handle) {
    this.handle = handle;
    /** @type {Set<Queue>} */
    this.queues = new Set();
    this.closing = null;
  }

  /** Resolves once connected; rejects (AmqpError) with AMQP_ERR_TIMEOUT or AMQP_ERR_CLOSED. */
  async waitConnected(timeoutMs = 10000) {
    const err = Buffer.alloc(ERRCAP);
    const rc = await callAsync(native().wait_connected_e, this.handle, timeoutMs, err, ERRCAP);
    if (rc !== OK) throw new AmqpError(codeName(rc), rc, errText(err), 'amqp_wait_connected');
  }

  /**
   * Opens (declares) a queue: `options` are the library's queue options in
   * camelCase (durable, prefetch, queueType, autoDelete, maxLength, ... and
   * 'arg.NAME': 'int:N'), plus `exchange` and `routingKey`.
   * @returns {Promise<Queue>}
   */
  async queue(name, options = {}) {
    if (this.closing) throw new AmqpError('AMQP_ERR_CLOSED', ERR_CLOSED, 'the connection is closing', 'amqp_queue_open');
    const err = Buffer.alloc(ERRCAP);
    const out = [0];
    const opts = optionString(options, ['exchange', 'routingKey']);
    const rc = await callAsync(native().queue_open_e, this.handle, name, options.exchange || null,
      options.routingKey || null, opts, out, err, ERRCAP);
    if (rc !== OK) throw new AmqpError(codeName(rc), rc, errText(err), 'amqp_queue_open');
    const q = new Queue(this, out[0], name, options);
    this.queues.add(q);
    return q;
  }

  /** The connection's state ('connected', ...) and counters, camelCase. */
  stats() {
    const s = { size: koffi.sizeof(ConnectionStats) };
    check(native().connection_get_stats(this.handle, s), 'amqp_connection_get_stats');
    const out = { state: STATE_NAMES[s.state] || String(s.state) };
    for (const k of Object.keys(s)) {
      if (k !== 'size' && k !== 'state') out[camel(k)] = Number(s[k]);
    }
    return out;
  }

  /**
   * Graceful close: refuses new publishes, stops consumers, waits up to
   * `timeoutMs` for every confirm and for running async handlers to settle;
   * resolves with the number of messages not confirmed (their
   * publishConfirmed promises reject with status 'unsent'). The queues are
   * unusable afterwards.
   * @returns {Promise<number>}
   */
  close(timeoutMs = 10000) {
    if (!this.closing) this.closing = this._close(timeoutMs);
    return this.closing;
  }

  async _close(timeoutMs) {
    for (const q of this.queues) q._closing();
    // Let the reports of pending publishConfirmed calls come in first: a
    // report still waiting in the library when close frees the queue
    // could not be taken any more.
    const deadline = Date.now() + timeoutMs;
    const pending = () => [...this.queues].some((q) => q.reports && !q.reports.done && q.reports.pending.size > 0);
    while (pending() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    timeoutMs = Math.max(0, deadline - Date.now());
    const report = { size: 32, unsent: 0, unsettled: 0, callbacks_running: 0 };
    const err = Buffer.alloc(ERRCAP);
    const rc = await callAsync(native().close_ex_e, this.handle, timeoutMs, report, err, ERRCAP);
    for (const q of this.queues) q._closed();
    if (rc !== OK && rc !== ERR_TIMEOUT) throw new AmqpError(codeName(rc), rc, errText(err), 'amqp_close_ex');
    return Number(report.unsent);
  }
}

function camel(k) {
  return k.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
}

// ---- queue ----------------------------------------------------------------

class Queue {
  constructor(conn, handle, name, options) {
    this.connection = conn;
    this.handle = handle;
    this.name = name;
    this.prefetch = options.prefetch === undefined ? 100 : Number(options.prefetch);
    this.consumer = null;
    this.reports = null;
    this.nextTag = 1;
    this.closed = false;
  }

  /**
   * Copies `body` into the library's buffer and returns at once (sent,
   * confirmed and resent across reconnects in the background). `props`:
   * contentType, contentEncoding, headers (an object; values typed by their
   * JS type or with `types`), deliveryMode / persistent, priority,
   * correlationId, replyTo, expiration, messageId, timestamp, type, userId,
   * appId, routingKey. Throws AmqpError (e.g. AMQP_ERR_BUFFER_FULL).
   * @param {Buffer|Uint8Array|string} body
   * @param {object} [props]
   */
  publish(body, props) {
    this._publish(body, props, 0);
  }

  _publish(body, props, tag) {
    const api = native();
    const str = typeof body === 'string';
    const len = str ? Buffer.byteLength(body) : body.length;
    let rc;
    if (props) {
      rc = (str ? api.publish_message_str : api.publish_message)(this.handle, body, len, encodeMessage(props, tag));
    } else if (tag) {
      rc = (str ? api.publish_tagged_str : api.publish_tagged)(this.handle, body, len, tag);
    } else {
      rc = (str ? api.publish_str : api.publish)(this.handle, body, len);
    }
    if (rc !== OK) throw lastError(rc, props ? 'amqp_publish_message' : 'amqp_publish');
    if (this.reports) this.reports.outstanding++;
  }

  /**
   * publish, resolving once the broker confirmed the message; rejects with
   * a PublishError (status 'nacked', 'refused', 'too_large', 'expired',
   * 'unroutable', 'unsent') when it failed for good, or an AmqpError when
   * the library did not take it (e.g. AMQP_ERR_BUFFER_FULL).
   * @returns {Promise<{attempts:number}>}
   */
  publishConfirmed(body, props) {
    try {
      const reports = this._reports();
      const tag = this.nextTag++;
      const p = new Promise((resolve, reject) => reports.pending.set(tag, { resolve, reject }));
      try {
        this._publish(body, props, tag);
      } catch (e) {
        reports.pending.delete(tag);
        throw e;
      }
      reports.changed();
      return p;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  _reports() {
    if (this.reports) return this.reports;
    if (this.closed || this.connection.closing) {
      throw new AmqpError('AMQP_ERR_CLOSED', ERR_CLOSED, 'the connection is closing', 'amqp_reports_pull');
    }
    const api = native();
    if (!api.reports_pull) {
      throw new AmqpError('AMQP_ERR_INTERNAL', 9, 'this libresilient_amqp has no amqp_reports_pull', 'publishConfirmed');
    }
    const fd = [0];
    check(api.reports_pull(this.handle, fd), 'amqp_reports_pull');
    this.reports = new ReportSource(this, fd[0]);
    getReactor().add(this.reports);
    return this.reports;
  }

  /**
   * Starts consuming: `handler(message)` is called on the event loop for
   * each delivery. It acks when the handler returns (or its Promise
   * resolves); a throw or rejection requeues (`onError: 'reject'` rejects),
   * is logged and counted. Return REJECT / REQUEUE to settle otherwise.
   * At most `concurrency` (default: the queue's prefetch) handlers run at
   * once (async handlers in flight).
   * @returns {Promise<Consumer>}
   */
  async consume(handler, options = {}) {
    if (this.consumer) throw new TypeError('resilient-amqp: this queue already has a consumer');
    if (typeof handler !== 'function') throw new TypeError('resilient-amqp: handler must be a function');
    const c = new Consumer(this, handler, options);
    this.consumer = c;
    try {
      await c._start();
    } catch (e) {
      this.consumer = null;
      throw e;
    }
    return c;
  }

  /** Pauses the queue's consumer (waiting deliveries go back to the broker). */
  async stop(timeoutMs = 30000) {
    if (this.consumer) this.consumer._setRunning(false);
    const err = Buffer.alloc(ERRCAP);
    const rc = await callAsync(native().consume_stop_timeout_e, this.handle, timeoutMs, err, ERRCAP);
    if (rc !== OK) throw new AmqpError(codeName(rc), rc, errText(err), 'amqp_consume_stop');
  }

  /** Resumes the consumer after stop(). */
  start() {
    check(native().consume_start(this.handle), 'amqp_consume_start');
    if (this.consumer) this.consumer._setRunning(true);
  }

  /** A snapshot of the queue's buffer and counters (camelCase), plus the binding's. */
  stats() {
    const s = { size: koffi.sizeof(QueueStats) };
    for (const f of QUEUE_STATS) s[f] = 0;
    check(native().queue_get_stats(this.handle, s), 'amqp_queue_get_stats');
    const out = {};
    for (const f of QUEUE_STATS) out[camel(f)] = Number(s[f]);
    const c = this.consumer;
    out.handlerErrors = c ? c.handlerErrors : 0;
    out.handled = c ? c.handled : 0;
    out.pendingConfirms = this.reports ? this.reports.pending.size : 0;
    return out;
  }

  /** The queue's name at the broker (for a server-named queue, the one it gave). */
  brokerName() {
    const buf = Buffer.alloc(256);
    const len = [0];
    check(native().queue_name(this.handle, buf, 256, len), 'amqp_queue_name');
    return errText(buf);
  }

  _closing() {
    if (this.consumer) this.consumer._setRunning(false);
  }

  _closed() {
    this.closed = true;
    if (this.consumer) this.consumer._detach();
    if (this.reports) this.reports._detach();
  }
}

// Reports of publishConfirmed messages, taken from the library in pull mode.
class ReportSource {
  constructor(queue, fd) {
    this.queue = queue;
    this.fd = fd;
    this.pending = new Map();
    // Messages that will still be reported (the library reports every one
    // that ends while reports are in pull mode, publishConfirmed or not):
    // while any is left we keep taking reports, so none holds buffer room.
    this.outstanding = queue.stats().buffered;
    this.out = Buffer.alloc(8 * BATCH);
    this.count = [0];
    this.done = false;
  }

  wantsFd() {
    return !this.done && (this.pending.size > 0 || this.outstanding > 0);
  }

  changed() {
    getReactor().update();
  }

  onReadable() {
    const api = native();
    for (;;) {
      const rc = api.poll_reports(this.queue.handle, this.out, BATCH, 0, this.count);
      if (rc !== OK) {
        if (rc === ERR_CLOSED || rc === ERR_INVALID_HANDLE) this._detach();
        break;
      }
      const n = this.count[0];
      for (let i = 0; i < n; i++) this._report(ptrAt(this.out, 8 * i));
      api.reports_free(this.out, n);
      if (n < BATCH) break;
    }
  }

  _report(ptr) {
    // amqp_delivery_report: size 0, tag 8, status 16, attempts 20, reply_code 24, reason 32.
    const v = scratch;
    native().libc.copy(v, ptr, 40);
    const tag = ptrAt(v, 8);
    const status = v.readUInt32LE(16);
    const attempts = v.readUInt32LE(20);
    if (this.outstanding > 0) this.outstanding--;
    const p = tag ? this.pending.get(tag) : undefined;
    if (!p) return;
    this.pending.delete(tag);
    if (status === 0) {
      p.resolve({ attempts });
      return;
    }
    const replyCode = v.readUInt32LE(24);
    const reasonPtr = ptrAt(v, 32);
    const reason = reasonPtr ? koffi.decode(reasonPtr, 'char', -1) : '';
    p.reject(new PublishError(REPORT_STATUS[status] || `status_${status}`, reason, replyCode, attempts));
  }

  _detach() {
    if (this.done) return;
    this.done = true;
    const r = getReactor();
    r.remove(this);
    r.closeFd(this.fd);
    for (const p of this.pending.values()) {
      p.reject(new PublishError('unsent', 'not confirmed when the connection closed', 0, 0));
    }
    this.pending.clear();
  }
}

// ---- consuming ------------------------------------------------------------

/** One delivery, handed to the consume handler. */
class Message {
  constructor(body, id, tag, redelivered, exchange, routingKey, props) {
    /** @type {Buffer} */
    this.body = body;
    this.deliveryId = id;
    this.deliveryTag = tag;
    this.redelivered = redelivered;
    this.exchange = exchange;
    this.routingKey = routingKey;
    this.properties = props.properties;
    this.headers = props.headers;
  }

  /** The body as UTF-8 text. */
  get text() {
    return this.body.toString('utf8');
  }
}

const scratch = Buffer.alloc(128);

function ptrAt(buf, off) {
  return buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * 4294967296;
}

/** Copies `len` bytes at address `ptr` into a new Buffer. */
function copyOut(ptr, len) {
  const b = Buffer.allocUnsafe(len);
  native().libc.copy(b, ptr, len);
  return b;
}

// amqp_delivery: body 0, body_len 8, delivery_tag 16, redelivered 24,
// exchange 32 (+len 40), routing_key 48 (+len 56), queue 64, delivery_id 72,
// message 80.
function decodeDelivery(ptr) {
  const s = scratch;
  native().libc.copy(s, ptr, 88);
  const bodyLen = ptrAt(s, 8);
  const bodyPtr = ptrAt(s, 0);
  const exLen = ptrAt(s, 40);
  const exPtr = ptrAt(s, 32);
  const rkLen = ptrAt(s, 56);
  const rkPtr = ptrAt(s, 48);
  const id = ptrAt(s, 72);
  const tag = ptrAt(s, 16);
  const redelivered = s[24] !== 0;
  const msgPtr = ptrAt(s, 80);
  const body = bodyLen ? copyOut(bodyPtr, bodyLen) : Buffer.alloc(0);
  const exchange = exLen ? koffi.decode(exPtr, 'char', exLen) : '';
  const routingKey = rkLen ? koffi.decode(rkPtr, 'char', rkLen) : '';
  return new Message(body, id, tag, redelivered, exchange, routingKey, decodeMessage(msgPtr, native().libc.copy));
}

class Consumer {
  constructor(queue, handler, options) {
    this.queue = queue;
    this.handler = handler;
    // prefetch 0 (unlimited): the batch size bounds each poll, nothing else.
    this.concurrency = options.concurrency || (queue.prefetch > 0 ? queue.prefetch : Infinity);
    this.onError = options.onError === 'reject' ? D_REJECT : D_REQUEUE;
    this.inflight = 0;
    this.running = true;
    this.done = false;
    this.cancelled = false;
    this.fd = -1;
    this.handled = 0;
    this.handlerErrors = 0;
    this.out = Buffer.alloc(8 * BATCH);
    this.count = [0];
    this.later = { [D_ACK]: [], [D_REJECT]: [], [D_REQUEUE]: [] };
    this.flushScheduled = false;
  }

  async _start() {
    const fd = [0];
    // Blocks for the broker's consume-ok: on the pool, off the event loop.
    const err = Buffer.alloc(ERRCAP);
    const rc = await callAsync(native().consume_pull_e, this.queue.handle, fd, err, ERRCAP);
    if (rc !== OK) throw new AmqpError(codeName(rc), rc, errText(err), 'amqp_consume_pull');
    this.fd = fd[0];
    getReactor().add(this);
  }

  wantsFd() {
    return this.running && !this.done && this.inflight < this.concurrency;
  }

  onReadable() {
    this.pump();
  }

  /** Takes what waits (non-blocking) and runs the handler on it. */
  pump() {
    const api = native();
    const qh = this.queue.handle;
    for (let round = 0; round < 8 && this.wantsFd(); round++) {
      const max = Math.min(BATCH, this.concurrency - this.inflight);
      const rc = api.poll(qh, this.out, max, 0, this.count);
      if (rc !== OK) {
        if (rc === ERR_CLOSED || rc === ERR_INVALID_HANDLE) this._detach();
        else if (rc !== ERR_TIMEOUT) binding(`amqp_poll: ${lastError(rc).message}`);
        break;
      }
      const n = this.count[0];
      const acks = [];
      const requeues = [];
      const rejects = [];
      const msgs = [];
      try {
        for (let i = 0; i < n; i++) msgs.push(decodeDelivery(ptrAt(this.out, 8 * i)));
      } finally {
        api.delivery_free_many(this.out, n); // the batch in one call (decoded copies kept)
      }
      for (const msg of msgs) this._dispatch(msg, acks, requeues, rejects);
      this._settle(acks, D_ACK);
      this._settle(requeues, D_REQUEUE);
      this._settle(rejects, D_REJECT);
      if (n < max) break;
    }
    getReactor().update();
  }

  _dispatch(msg, acks, requeues, rejects) {
    let r;
    try {
      r = this.handler(msg);
    } catch (e) {
      this._failed(msg, e);
      (this.onError === D_REJECT ? rejects : requeues).push(msg.deliveryId);
      return;
    }
    if (r && typeof r.then === 'function') {
      this.inflight++;
      r.then((v) => this._settleLater(msg.deliveryId, disposition(v)),
        (e) => {
          this._failed(msg, e);
          this._settleLater(msg.deliveryId, this.onError);
        });
      return;
    }
    this.handled++;
    const d = disposition(r);
    (d === D_ACK ? acks : d === D_REQUEUE ? requeues : rejects).push(msg.deliveryId);
  }

  _failed(msg, e) {
    this.handlerErrors++;
    binding(`the handler failed on delivery ${msg.deliveryId} (${this.onError === D_REJECT ? 'rejected' : 'requeued'})`, e);
  }

  _settleLater(id, d) {
    this.inflight--;
    this.handled++;
    this.later[d].push(id);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      for (const d2 of [D_ACK, D_REQUEUE, D_REJECT]) {
        const ids = this.later[d2];
        if (ids.length) {
          this.later[d2] = [];
          this._settle(ids, d2);
        }
      }
      if (this.wantsFd()) this.pump();
    });
  }

  _settle(ids, d) {
    if (ids.length === 0 || this.done) return;
    const arr = new BigUint64Array(ids.length);
    for (let i = 0; i < ids.length; i++) arr[i] = BigInt(ids[i]);
    const rc = native().settle_many(this.queue.handle, arr, ids.length, d, null);
    // Stale (a reconnect: the broker redelivers) and closed are expected.
    if (rc !== OK && rc !== ERR_STALE_DELIVERY && rc !== ERR_ALREADY_SETTLED && rc !== ERR_INVALID_HANDLE &&
        rc !== ERR_CLOSED) {
      binding(`amqp_settle_many: ${lastError(rc).message}`);
    }
  }

  _setRunning(on) {
    if (this.cancelled) return;
    this.running = on;
    getReactor().update();
  }

  /** Pauses consuming (the queue's stop). */
  stop(timeoutMs) {
    return this.queue.stop(timeoutMs);
  }

  /**
   * Ends this consumer (amqp_consume_pull_cancel): no handler starts any
   * more, the deliveries the library prefetched go back to the broker, async
   * handlers in flight still settle theirs. The queue can consume() again.
   * Waits for the broker's cancel-ok (up to timeoutMs) off the event loop.
   */
  async cancel(timeoutMs = 5000) {
    if (this.done || this.cancelled) return;
    this.cancelled = true;
    this.running = false; // no more polls; settles of handlers in flight still go out
    const r = getReactor();
    r.remove(this);
    if (this.fd >= 0) r.closeFd(this.fd);
    this.fd = -1;
    if (this.queue.consumer === this) this.queue.consumer = null;
    const rc = await callAsync(native().consume_pull_cancel, this.queue.handle, timeoutMs);
    if (rc !== OK && rc !== ERR_CLOSED && rc !== ERR_INVALID_HANDLE) {
      throw new AmqpError(codeName(rc), rc, `amqp_consume_pull_cancel failed (${codeName(rc)})`,
        'amqp_consume_pull_cancel');
    }
  }

  /** Resumes consuming. */
  start() {
    this.queue.start();
  }

  _detach() {
    if (this.done) return;
    this.done = true;
    const r = getReactor();
    r.remove(this);
    if (this.fd >= 0) r.closeFd(this.fd);
    this.fd = -1;
  }
}

function disposition(v) {
  if (v === REQUEUE) return D_REQUEUE;
  if (v === REJECT) return D_REJECT;
  return D_ACK;
}

/** The loaded library's ABI version (amqp_abi_version). */
function abiVersion() {
  return native().abi_version();
}

module.exports = {
  connect, Connection, Queue, Consumer, Message, AmqpError, PublishError, setLogger, types, Typed,
  ACK, REJECT, REQUEUE, abiVersion,
};
