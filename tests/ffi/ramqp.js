// koffi binding of the few resilient-amqp calls the FFI exit tests use.
// RA_LIB: path of libresilient_amqp.so; RA_KOFFI: koffi's directory;
// RESILIENT_AMQP_TEST_URI: the broker.
'use strict';
const koffi = require(process.env.RA_KOFFI);

const AMQP_OK = 0;
const AMQP_ACK = 0x5a01;
const AMQP_LOG_DEBUG = 4;

const Delivery = koffi.struct('amqp_delivery', {
  body: 'void *',
  body_len: 'size_t',
  delivery_tag: 'uint64_t',
  redelivered: 'bool',
  exchange: 'void *',
  exchange_len: 'size_t',
  routing_key: 'void *',
  routing_key_len: 'size_t',
  queue: 'uint64_t',
  delivery_id: 'uint64_t',
});
const STAT_FIELDS = ('buffered buffered_bytes in_flight published confirmed resent nacked ' +
  'delivered acked rejected requeued released unsettled invalid_dispositions returns_ignored')
  .split(' ');
const statsFields = { size: 'size_t' };
for (const f of STAT_FIELDS) statsFields[f] = 'uint64_t';
const QueueStats = koffi.struct('amqp_queue_stats', statsFields);

const ConsumeFn = koffi.proto('int amqp_consume_fn(const amqp_delivery *delivery, void *userdata)');
const LogFn = koffi.proto('void amqp_log_fn(int level, const char *message, void *userdata)');

const lib = koffi.load(process.env.RA_LIB);
const api = {
  connect: lib.func('int amqp_connect(const char *uri, const char *options, _Out_ uint64_t *out)'),
  wait_connected: lib.func('int amqp_wait_connected(uint64_t conn, uint32_t timeout_ms)'),
  queue_open: lib.func('int amqp_queue_open(uint64_t conn, const char *queue, const char *exchange, ' +
    'const char *routing_key, const char *options, _Out_ uint64_t *out)'),
  publish: lib.func('int amqp_publish(uint64_t queue, const void *body, size_t len)'),
  consume: lib.func('int amqp_consume(uint64_t queue, amqp_consume_fn *cb, void *userdata, uint32_t repeat)'),
  set_log_callback: lib.func('int amqp_set_log_callback(amqp_log_fn *cb, int level, void *userdata)'),
  queue_get_stats: lib.func('int amqp_queue_get_stats(uint64_t queue, _Inout_ amqp_queue_stats *out)'),
  last_error: lib.func('size_t amqp_last_error(_Out_ uint8_t *buf, size_t cap)'),
};

function check(what, rc) {
  if (rc !== AMQP_OK) {
    const buf = Buffer.alloc(512);
    const n = api.last_error(buf, buf.length);
    throw new Error(`${what}: ${rc} ${buf.subarray(0, Math.min(n, 511)).toString()}`);
  }
}

function connect(uri, options) {
  const out = [0];
  check('amqp_connect', api.connect(uri || process.env.RESILIENT_AMQP_TEST_URI,
    options === undefined ? 'reconnect_delay_ms=10&reconnect_delay_max_ms=50' : options, out));
  return out[0];
}

function openQueue(conn, name, options) {
  check('amqp_wait_connected', api.wait_connected(conn, 15000));
  const out = [0];
  check('amqp_queue_open', api.queue_open(conn, name, null, null, options || 'durable=false', out));
  return out[0];
}

function stats(q) {
  const s = { size: koffi.sizeof(QueueStats) };
  for (const f of STAT_FIELDS) s[f] = 0;
  check('amqp_queue_get_stats', api.queue_get_stats(q, s));
  return s;
}

function publish(q, text) {
  const b = Buffer.from(text);
  check('amqp_publish', api.publish(q, b, b.length));
}

module.exports = {
  koffi, api, check, connect, openQueue, stats, publish, Delivery, ConsumeFn, LogFn,
  AMQP_ACK, AMQP_LOG_DEBUG,
};
