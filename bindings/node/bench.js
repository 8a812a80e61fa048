#!/usr/bin/env node
// node bench.js URI QUEUE N SIZE
// Publishes N messages of SIZE bytes to QUEUE (every one through
// publishConfirmed, waiting until all are confirmed), then consumes them all
// with ack (pull mode, batches of up to 256, amqp_settle_many) and prints
// `BENCH node publish <msg/s> consume <msg/s>`.
'use strict';
const amqp = require('./index.js');

async function main() {
  const [uri, queue, nArg, sizeArg] = process.argv.slice(2);
  if (!uri || !queue) {
    process.stderr.write('usage: node bench.js URI QUEUE N SIZE\n');
    process.exit(2);
  }
  const n = Number(nArg || 100000);
  const size = Number(sizeArg || 64);
  const conn = await amqp.connect(uri);
  const q = await conn.queue(queue, { durable: false, prefetch: 500 });
  const body = Buffer.alloc(size, 120);

  const t0 = process.hrtime.bigint();
  if (process.env.BENCH_NO_REPORTS) {
    // A library without pull-mode delivery reports: publish, then watch the stats.
    for (let i = 0; i < n; i++) q.publish(body);
    while (q.stats().confirmed < n) await new Promise((r) => setTimeout(r, 1));
  } else {
    const confirmed = new Array(n);
    for (let i = 0; i < n; i++) {
      // Keep at most 50,000 in the buffer (its default bound is 100,000).
      if (i >= 50000 && i % 10000 === 0) await confirmed[i - 40000];
      confirmed[i] = q.publishConfirmed(body);
    }
    await Promise.all(confirmed);
  }
  const t1 = process.hrtime.bigint();

  let got = 0;
  let done;
  const all = new Promise((resolve) => { done = resolve; });
  const t2 = process.hrtime.bigint();
  await q.consume(() => {
    if (++got === n) done();
  });
  await all;
  const t3 = process.hrtime.bigint();
  await conn.close(10000);
  const rate = (count, a, b) => Math.round(count / (Number(b - a) / 1e9));
  process.stdout.write(`BENCH node publish ${rate(n, t0, t1)} consume ${rate(n, t2, t3)}\n`);
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e && e.stack}\n`);
  process.exit(1);
});
