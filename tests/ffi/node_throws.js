// A handler that throws must not ack: with an uncaughtException handler the
// process goes on and koffi returns 0, which is no amqp_disposition: the
// message is requeued, redelivered and counted in invalid_dispositions. Each
// message throws on its first delivery and is acked when redelivered.
// While a thrown exception is pending, koffi returns 0 without calling the
// function at all (seen: 21 calls for 46 deliveries), so how many deliveries
// come back invalid depends on timing: at least one per message, each one a
// requeue, never an ack.
'use strict';
const ra = require('./ramqp.js');
const { koffi, api } = ra;

const N = 20;
const acked = new Set();
let thrown = 0;
process.on('uncaughtException', (e) => {
  if (!String(e.message).startsWith('handler failed')) {
    process.stderr.write(`unexpected: ${e.stack}\n`);
    process.exit(2);
  }
  thrown++;
});

const onDelivery = koffi.register((p, userdata) => {
  const d = koffi.decode(p, ra.Delivery);
  const body = Buffer.from(koffi.decode(d.body, 'uint8_t', Number(d.body_len))).toString();
  if (!d.redelivered) throw new Error(`handler failed on ${body} (expected by the test)`);
  acked.add(body);
  return ra.AMQP_ACK;
}, koffi.pointer(ra.ConsumeFn));

const conn = ra.connect();
const q = ra.openQueue(conn, process.argv[2]);
for (let i = 0; i < N; i++) ra.publish(q, `t${i}`);
ra.check('amqp_consume', api.consume(q, onDelivery, null, 2));

const started = Date.now();
const timer = setInterval(() => {
  const s = ra.stats(q);
  const done = acked.size === N && Number(s.acked) === N;
  if (!done && Date.now() - started < 30000) return;
  clearInterval(timer);
  process.stderr.write(`acked ${acked.size} of ${N}, thrown ${thrown}; stats: delivered=${s.delivered} ` +
    `acked=${s.acked} requeued=${s.requeued} invalid_dispositions=${s.invalid_dispositions}\n`);
  const invalid = Number(s.invalid_dispositions);
  const ok = done && invalid >= N && Number(s.requeued) === invalid &&
    Number(s.delivered) === N + invalid;
  process.exit(ok ? 0 : 1);
}, 20);
