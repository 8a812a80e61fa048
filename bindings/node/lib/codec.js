// JS values <-> the library's amqp_message / amqp_field / amqp_value.
'use strict';
const { koffi, FieldOut, ValueOut } = require('./native');

const K = {
  VOID: 0, BOOL: 1, INT: 2, DOUBLE: 3, STRING: 4, BYTES: 5, TIMESTAMP: 6, TABLE: 7, ARRAY: 8,
  INT8: 9, UINT8: 10, INT16: 11, UINT16: 12, INT32: 13, UINT32: 14, FLOAT: 15, DECIMAL: 16,
};
const P = {
  CONTENT_TYPE: 0x8000, CONTENT_ENCODING: 0x4000, HEADERS: 0x2000, DELIVERY_MODE: 0x1000,
  PRIORITY: 0x0800, CORRELATION_ID: 0x0400, REPLY_TO: 0x0200, EXPIRATION: 0x0100,
  MESSAGE_ID: 0x0080, TIMESTAMP: 0x0040, TYPE: 0x0020, USER_ID: 0x0010, APP_ID: 0x0008,
};
const MESSAGE_SIZE = 128;

/** A header value with an explicit AMQP type (see `types`). */
class Typed {
  constructor(kind, value, scale) {
    this.kind = kind;
    this.value = value;
    if (scale !== undefined) this.scale = scale;
  }
}

/** Constructors for header values whose AMQP type is not the default one. */
const types = {
  int8: (v) => new Typed(K.INT8, v),
  uint8: (v) => new Typed(K.UINT8, v),
  int16: (v) => new Typed(K.INT16, v),
  uint16: (v) => new Typed(K.UINT16, v),
  int32: (v) => new Typed(K.INT32, v),
  uint32: (v) => new Typed(K.UINT32, v),
  int64: (v) => new Typed(K.INT, v),
  float: (v) => new Typed(K.FLOAT, v),
  double: (v) => new Typed(K.DOUBLE, v),
  /** value * 10^-scale, value an unsigned 32-bit integer. */
  decimal: (value, scale) => new Typed(K.DECIMAL, value, scale),
  timestamp: (v) => new Typed(K.TIMESTAMP, v),
  bytes: (v) => new Typed(K.BYTES, v),
  string: (v) => new Typed(K.STRING, v),
};

function encodeValue(v) {
  if (v === null || v === undefined) return { kind: K.VOID };
  if (v instanceof Typed) {
    switch (v.kind) {
      case K.DOUBLE: case K.FLOAT: return { kind: v.kind, number: Number(v.value) };
      case K.DECIMAL: return { kind: K.DECIMAL, integer: v.value, len: v.scale };
      case K.TIMESTAMP: return encodeTimestamp(v.value);
      case K.BYTES: { const b = Buffer.from(v.value); return { kind: K.BYTES, bytes: b, len: b.length }; }
      case K.STRING: { const b = Buffer.from(String(v.value)); return { kind: K.STRING, bytes: b, len: b.length }; }
      default: return { kind: v.kind, integer: v.value };
    }
  }
  switch (typeof v) {
    case 'boolean': return { kind: K.BOOL, integer: v ? 1 : 0 };
    case 'number': return Number.isInteger(v) ? { kind: K.INT, integer: v } : { kind: K.DOUBLE, number: v };
    case 'bigint': return { kind: K.INT, integer: v };
    case 'string': { const b = Buffer.from(v); return { kind: K.STRING, bytes: b, len: b.length }; }
    default: break;
  }
  if (v instanceof Date) return encodeTimestamp(v);
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return { kind: K.BYTES, bytes: v, len: v.length };
  if (Array.isArray(v)) {
    const arr = v.map(encodeValue);
    return { kind: K.ARRAY, bytes: arr.length ? koffi.as(arr, 'amqp_value *') : null, len: arr.length };
  }
  if (typeof v === 'object') {
    const fields = encodeTable(v);
    return { kind: K.TABLE, bytes: fields.length ? koffi.as(fields, 'amqp_field *') : null, len: fields.length };
  }
  throw new TypeError(`resilient-amqp: a header value of type ${typeof v} has no AMQP type`);
}

function encodeTimestamp(t) {
  const secs = t instanceof Date ? Math.floor(t.getTime() / 1000) : t;
  return { kind: K.TIMESTAMP, integer: secs };
}

function encodeTable(obj) {
  return Object.keys(obj).map((key) => ({ key, value: encodeValue(obj[key]) }));
}

const STRING_PROPS = {
  routingKey: 'routing_key', contentType: 'content_type', contentEncoding: 'content_encoding',
  correlationId: 'correlation_id', replyTo: 'reply_to', messageId: 'message_id', type: 'message_type',
  userId: 'user_id', appId: 'app_id',
};

/**
 * Publish properties (camelCase) -> the amqp_message koffi encodes.
 * @param {object} props
 * @param {number} tag
 */
function encodeMessage(props, tag) {
  const m = { size: MESSAGE_SIZE, tag };
  let present = 0;
  for (const key of Object.keys(props)) {
    const v = props[key];
    if (v === undefined) continue;
    const field = STRING_PROPS[key];
    if (field) {
      m[field] = String(v);
      continue;
    }
    switch (key) {
      case 'headers': {
        const fields = encodeTable(v);
        m.headers = fields;
        m.header_count = fields.length;
        break;
      }
      case 'deliveryMode': m.delivery_mode = v; break;
      case 'persistent': m.delivery_mode = v ? 2 : 1; break;
      case 'priority': m.priority = v; present |= P.PRIORITY; break;
      case 'expiration': m.expiration = String(v); break;
      case 'timestamp': m.timestamp = v instanceof Date ? Math.floor(v.getTime() / 1000) : v; present |= P.TIMESTAMP; break;
      default: throw new TypeError(`resilient-amqp: unknown message property '${key}'`);
    }
  }
  m.present = present;
  return m;
}

function decodeValue(v) {
  switch (v.kind) {
    case K.VOID: return null;
    case K.BOOL: return v.integer !== 0;
    case K.DOUBLE: case K.FLOAT: return v.number;
    case K.STRING: return v.len ? koffi.decode(v.bytes, 'char', v.len) : '';
    case K.BYTES: { // a copy: the delivery's memory is freed after decoding
      const b = Buffer.alloc(v.len);
      if (v.len) b.set(new Uint8Array(koffi.view(v.bytes, v.len)));
      return b;
    }
    case K.TIMESTAMP: return new Date(Number(v.integer) * 1000);
    case K.TABLE: return v.len ? decodeTable(v.bytes, v.len) : {};
    case K.ARRAY: return v.len ? koffi.decode(v.bytes, ValueOut, v.len).map(decodeValue) : [];
    case K.DECIMAL: return new Typed(K.DECIMAL, Number(v.integer), Number(v.len));
    default: return v.integer; // the integer kinds (a BigInt beyond 2^53)
  }
}

function decodeTable(ptr, count) {
  const out = {};
  for (const f of koffi.decode(ptr, FieldOut, count)) out[f.key] = decodeValue(f.value);
  return out;
}

const EMPTY = Object.freeze({});

const mscratch = Buffer.alloc(128);

function str(buf, off) {
  const lo = buf.readUInt32LE(off);
  const hi = buf.readUInt32LE(off + 4);
  return lo || hi ? koffi.decode(lo + hi * 4294967296, 'char', -1) : null;
}

/**
 * A delivery's amqp_message -> { properties, headers }.
 * Layout: size 0, routing_key 8, content_type 16, content_encoding 24,
 * headers 32, header_count 40, delivery_mode 48, priority 49, present 50,
 * correlation_id 56, reply_to 64, expiration 72, message_id 80,
 * timestamp 88, message_type 96, user_id 104, app_id 112, tag 120.
 * @param {number} ptr
 * @param {(dst:Buffer, src:number, n:number)=>void} copy
 */
function decodeMessage(ptr, copy) {
  const m = mscratch;
  copy(m, ptr, 120);
  const present = m.readUInt16LE(50);
  if (present === 0) return { properties: EMPTY, headers: EMPTY };
  const p = {};
  if (present & P.CONTENT_TYPE) p.contentType = str(m, 16);
  if (present & P.CONTENT_ENCODING) p.contentEncoding = str(m, 24);
  if (present & P.DELIVERY_MODE) p.deliveryMode = m[48];
  if (present & P.PRIORITY) p.priority = m[49];
  if (present & P.CORRELATION_ID) p.correlationId = str(m, 56);
  if (present & P.REPLY_TO) p.replyTo = str(m, 64);
  if (present & P.EXPIRATION) p.expiration = str(m, 72);
  if (present & P.MESSAGE_ID) p.messageId = str(m, 80);
  if (present & P.TIMESTAMP) p.timestamp = new Date(Number(m.readBigUInt64LE(88)) * 1000);
  if (present & P.TYPE) p.type = str(m, 96);
  if (present & P.USER_ID) p.userId = str(m, 104);
  if (present & P.APP_ID) p.appId = str(m, 112);
  let headers = EMPTY;
  const count = m.readUInt32LE(40) + m.readUInt32LE(44) * 4294967296;
  if (present & P.HEADERS) {
    const hp = m.readUInt32LE(32) + m.readUInt32LE(36) * 4294967296;
    headers = count ? decodeTable(hp, count) : {};
  }
  return { properties: p, headers };
}

module.exports = { types, Typed, encodeMessage, decodeMessage, K };
