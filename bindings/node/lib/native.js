// The C ABI of libresilient_amqp.so through koffi: types, functions, and
// where the library is found. Nothing here keeps state but the loaded library.
'use strict';
const fs = require('fs');
const path = require('path');
const koffi = require('koffi');

/** Candidate paths of the shared library, most specific first. */
function libraryCandidates() {
  const out = [];
  if (process.env.RESILIENT_AMQP_LIB) out.push(process.env.RESILIENT_AMQP_LIB);
  if (process.env.RESILIENT_AMQP_LIB_DIR) {
    out.push(path.join(process.env.RESILIENT_AMQP_LIB_DIR, 'libresilient_amqp.so'));
  }
  // In the repository: bindings/node -> target/release.
  out.push(path.resolve(__dirname, '..', '..', '..', 'target', 'release', 'libresilient_amqp.so'));
  return out;
}

function loadLibrary() {
  for (const p of libraryCandidates()) {
    if (fs.existsSync(p)) return koffi.load(p);
  }
  // The system's search path (LD_LIBRARY_PATH, ldconfig).
  return koffi.load('libresilient_amqp.so');
}

const Value = koffi.struct('amqp_value', {
  kind: 'uint32_t', integer: 'int64_t', number: 'double', bytes: 'const void *', len: 'size_t',
});
const Field = koffi.struct('amqp_field', { key: 'const char *', value: Value });
const Message = koffi.struct('amqp_message', {
  size: 'size_t',
  routing_key: 'const char *',
  content_type: 'const char *',
  content_encoding: 'const char *',
  headers: 'const amqp_field *',
  header_count: 'size_t',
  delivery_mode: 'uint8_t',
  priority: 'uint8_t',
  present: 'uint16_t',
  correlation_id: 'const char *',
  reply_to: 'const char *',
  expiration: 'const char *',
  message_id: 'const char *',
  timestamp: 'uint64_t',
  message_type: 'const char *',
  user_id: 'const char *',
  app_id: 'const char *',
  tag: 'uint64_t',
});
const ValueOut = koffi.struct('amqp_value_out', {
  kind: 'uint32_t', integer: 'int64_t', number: 'double', bytes: 'void *', len: 'size_t',
});
const FieldOut = koffi.struct('amqp_field_out', { key: 'const char *', value: ValueOut });

const QUEUE_STATS = ('buffered buffered_bytes in_flight published confirmed resent nacked ' +
  'delivered acked rejected requeued released unsettled invalid_dispositions returns_ignored ' +
  'failed expired refused queue_failed consume_refusals unroutable deduplicated spooled ' +
  'spool_restored spool_dropped_bytes').split(' ');
const qs = { size: 'size_t' };
for (const f of QUEUE_STATS) qs[f] = 'uint64_t';
const QueueStats = koffi.struct('amqp_queue_stats', qs);
const ConnectionStats = koffi.struct('amqp_connection_stats', {
  size: 'size_t',
  state: 'int',
  connects: 'uint64_t',
  failed_attempts: 'uint64_t',
  consecutive_failures: 'uint64_t',
  queues: 'uint64_t',
  protocol_errors: 'uint64_t',
  consume_connects: 'uint64_t',
  consume_failed_attempts: 'uint64_t',
});
const CloseReport = koffi.struct('amqp_close_report', {
  size: 'size_t', unsent: 'uint64_t', unsettled: 'uint64_t', callbacks_running: 'uint64_t',
});
const LogFn = koffi.proto('void amqp_log_fn(int level, const char *message, void *userdata)');

let api = null;

/** The library's functions, loaded on first use. */
function native() {
  if (api) return api;
  const lib = loadLibrary();
  const f = (sig) => lib.func(sig);
  const optional = (sig) => {
    try {
      return lib.func(sig);
    } catch (_) {
      return null;
    }
  };
  api = {
    koffi,
    abi_version: f('uint32_t amqp_abi_version(void)'),
    result_str: f('const char *amqp_result_str(int code)'),
    last_error: f('size_t amqp_last_error(_Out_ uint8_t *buf, size_t cap)'),
    connect: f('int amqp_connect(const char *uri, const char *options, _Out_ uint64_t *out)'),
    wait_connected_e: f('int amqp_wait_connected_e(uint64_t conn, uint32_t timeout_ms, ' +
      '_Out_ uint8_t *errbuf, size_t errcap)'),
    queue_open_e: f('int amqp_queue_open_e(uint64_t conn, const char *queue, const char *exchange, ' +
      'const char *routing_key, const char *options, _Out_ uint64_t *out, _Out_ uint8_t *errbuf, size_t errcap)'),
    queue_name: f('int amqp_queue_name(uint64_t queue, _Out_ uint8_t *buf, size_t cap, _Out_ size_t *len)'),
    publish: f('int amqp_publish(uint64_t queue, const void *body, size_t len)'),
    publish_str: f('int amqp_publish(uint64_t queue, const char *body, size_t len)'),
    publish_tagged: f('int amqp_publish_tagged(uint64_t queue, const void *body, size_t len, uint64_t tag)'),
    publish_tagged_str: f('int amqp_publish_tagged(uint64_t queue, const char *body, size_t len, uint64_t tag)'),
    publish_message: f('int amqp_publish_message(uint64_t queue, const void *body, size_t len, const amqp_message *m)'),
    publish_message_str: f('int amqp_publish_message(uint64_t queue, const char *body, size_t len, const amqp_message *m)'),
    consume_pull_e: f('int amqp_consume_pull_e(uint64_t queue, _Out_ int *fd, _Out_ uint8_t *errbuf, size_t errcap)'),
    consume_pull_cancel: f('int amqp_consume_pull_cancel(uint64_t queue, uint32_t timeout_ms)'),
    poll: f('int amqp_poll(uint64_t queue, void *out, size_t max, uint32_t timeout_ms, _Out_ size_t *count)'),
    settle: f('int amqp_settle(uint64_t queue, uint64_t delivery_id, int disposition)'),
    settle_many: f('int amqp_settle_many(uint64_t queue, const uint64_t *ids, size_t n, int disposition, void *results)'),
    // Pointers travel as Numbers (user-space addresses are below 2^53) in
    // the integer register a pointer uses (x86_64, aarch64).
    delivery_free: f('void amqp_delivery_free(uint64_t d)'),
    delivery_free_many: f('void amqp_delivery_free_many(const void *ds, size_t count)'),
    consume_stop_timeout_e: f('int amqp_consume_stop_timeout_e(uint64_t queue, uint32_t timeout_ms, ' +
      '_Out_ uint8_t *errbuf, size_t errcap)'),
    consume_start: f('int amqp_consume_start(uint64_t queue)'),
    close_ex_e: f('int amqp_close_ex_e(uint64_t conn, uint32_t timeout_ms, _Inout_ amqp_close_report *out, ' +
      '_Out_ uint8_t *errbuf, size_t errcap)'),
    queue_get_stats: f('int amqp_queue_get_stats(uint64_t queue, _Inout_ amqp_queue_stats *out)'),
    connection_get_stats: f('int amqp_connection_get_stats(uint64_t conn, _Inout_ amqp_connection_stats *out)'),
    connection_state_str: f('const char *amqp_connection_state_str(int state)'),
    set_log_callback: f('int amqp_set_log_callback(amqp_log_fn *cb, int level, void *userdata)'),
    set_log_callback_ex: f('int amqp_set_log_callback_ex(amqp_log_fn *cb, int level, void *userdata, void *release)'),
    // Delivery reports in pull mode (ABI with amqp_reports_pull): optional so
    // that an older library still loads (publishConfirmed then throws).
    reports_pull: optional('int amqp_reports_pull(uint64_t queue, _Out_ int *fd)'),
    poll_reports: optional('int amqp_poll_reports(uint64_t queue, void *out, size_t max, uint32_t timeout_ms, _Out_ size_t *count)'),
    reports_free: optional('void amqp_reports_free(void *reports, size_t count)'),
  };
  const libc = koffi.load('libc.so.6');
  api.libc = {
    poll: libc.func('int poll(void *fds, unsigned long nfds, int timeout)'),
    pipe2: libc.func('int pipe2(_Out_ int *fds, int flags)'),
    read: libc.func('long read(int fd, void *buf, size_t n)'),
    write: libc.func('long write(int fd, const void *buf, size_t n)'),
    close: libc.func('int close(int fd)'),
    sem_init: libc.func('int sem_init(void *sem, int pshared, unsigned int value)'),
    sem_timedwait: libc.func('int sem_timedwait(void *sem, const void *abstime)'),
    sem_trywait: libc.func('int sem_trywait(void *sem)'),
    dlsym: libc.func('void *dlsym(void *handle, const char *name)'),
    // Reads library memory into a Buffer: far cheaper than koffi.view.
    copy: libc.func('void *memcpy(void *dst, uint64_t src, size_t n)'),
  };
  return api;
}

module.exports = {
  native, koffi, Value, Field, Message, ValueOut, FieldOut, QueueStats, ConnectionStats,
  CloseReport, LogFn, QUEUE_STATS, libraryCandidates,
};
