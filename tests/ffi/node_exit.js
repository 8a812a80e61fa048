// process.exit() from the main thread (no close) while deliveries arrive and
// the consumer and log threads are calling into JavaScript through koffi.
// The process must exit with status 0 and no abort.
'use strict';
const ra = require('./ramqp.js');
const { koffi, api } = ra;

const queueName = process.argv[2];
let delivered = 0;

const onDelivery = koffi.register((d, userdata) => {
  delivered++;
  return ra.AMQP_ACK;
}, koffi.pointer(ra.ConsumeFn));
const onLog = koffi.register((level, message, userdata) => {}, koffi.pointer(ra.LogFn));
ra.check('amqp_set_log_callback', api.set_log_callback(onLog, ra.AMQP_LOG_DEBUG, null));

const conn = ra.connect();
const q = ra.openQueue(conn, queueName);
// A connection that never connects keeps the log thread busy with failures.
ra.connect('amqp://guest:guest@127.0.0.1:9/%2f');
for (let i = 0; i < 3000; i++) ra.publish(q, `m${i}`);
ra.check('amqp_consume', api.consume(q, onDelivery, null, 4));

const started = Date.now();
const timer = setInterval(() => {
  if (delivered >= 50) {
    process.stderr.write(`exiting with deliveries arriving (${delivered} delivered)\n`);
    process.exit(0);
  }
  if (Date.now() - started > 20000) {
    process.stderr.write('no deliveries within 20 s\n');
    process.exit(3);
  }
}, 1);
