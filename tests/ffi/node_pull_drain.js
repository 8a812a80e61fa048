// Node consuming the way an event loop should (pull mode: no library thread
// ever calls into JavaScript), ending by draining its event loop (no
// process.exit(), no close) while the pull consumer still receives
// deliveries. The process must exit with status 0 and no abort (with
// callbacks through koffi this exit aborted in napi_call_threadsafe_function).
'use strict';
const ra = require('./ramqp.js');
const { koffi } = ra;

const lib = koffi.load(process.env.RA_LIB);
const consumePull = lib.func('int amqp_consume_pull(uint64_t queue, void *notify_fd)');
const poll = lib.func(
  'int amqp_poll(uint64_t queue, void *out, size_t max, uint32_t timeout_ms, _Out_ size_t *count)');
const settle = lib.func('int amqp_settle(uint64_t queue, uint64_t delivery_id, int disposition)');
// A pointer passed as its integer value (the same register on x86_64 and aarch64).
const deliveryFree = lib.func('void amqp_delivery_free(uint64_t delivery)');
const AMQP_ERR_TIMEOUT = 6;
const DELIVERY_ID_OFFSET = 72; // body, body_len, tag, redelivered, exchange(+len), rk(+len), queue

const conn = ra.connect();
const q = ra.openQueue(conn, process.argv[2]);
for (let i = 0; i < 3000; i++) ra.publish(q, `m${i}`);
ra.check('amqp_consume_pull', consumePull(q, null));

const MAX = 64;
const out = Buffer.alloc(8 * MAX);
let handled = 0;
const started = Date.now();
const timer = setInterval(() => {
  for (;;) {
    const count = [0];
    const rc = poll(q, out, MAX, 0, count);
    if (rc === AMQP_ERR_TIMEOUT) break;
    ra.check('amqp_poll', rc);
    for (let i = 0; i < count[0]; i++) {
      const p = out.readBigUInt64LE(8 * i);
      const id = koffi.decode(Number(p), DELIVERY_ID_OFFSET, 'uint64_t');
      ra.check('amqp_settle', settle(q, id, ra.AMQP_ACK));
      deliveryFree(p);
      handled++;
    }
  }
  if (handled >= 200) {
    // Nothing keeps the loop alive now: Node ends by draining it, while the
    // library's pull consumer goes on receiving.
    process.stderr.write(`draining the event loop after ${handled} deliveries\n`);
    clearInterval(timer);
  } else if (Date.now() - started > 20000) {
    process.stderr.write(`only ${handled} deliveries within 20 s\n`);
    process.exit(3);
  }
}, 2);
