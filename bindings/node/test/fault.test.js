'use strict';
const test = require('node:test');
const assert = require('node:assert');
const amqp = require('..');
const { URI, CTL, qname, ctl, sleep, captureLogger } = require('./helpers');

test('broker connections closed every 0.5 s while publishing and consuming 10,000: 0 missing',
  { skip: CTL ? false : 'RESILIENT_AMQP_TEST_CTL is not set', timeout: 180000 }, async () => {
    const log = captureLogger();
    amqp.setLogger(log, 'warn');
    const conn = await amqp.connect(URI, { reconnectDelayMs: 10, reconnectDelayMaxMs: 200 });
    const N = 10000;
    const seen = new Set();
    let deliveries = 0;
    let closes = 0;
    let faulting = true;
    const faults = (async () => {
      while (faulting) {
        await ctl('close_all_connections test');
        closes++;
        await sleep(500);
      }
    })();
    try {
      const q = await conn.queue(qname('fault'), { durable: true, expiresMs: 120000, prefetch: 200 });
      let allIn;
      const received = new Promise((r) => { allIn = r; });
      await q.consume((m) => {
        deliveries++;
        seen.add(m.text);
        if (seen.size === N) allIn();
      });
      // Publish at ~2,000 msg/s so that faults hit publishing too.
      // Every other message through publishConfirmed: each must resolve
      // (confirmed), whatever the faults.
      const confirms = [];
      for (let i = 0; i < N; i++) {
        if (i === N - 1000) {
          // rabbitmqctl is slow on a loaded machine: 3 closes land before the last 1,000
          for (const end = Date.now() + 60000; closes < 3 && Date.now() < end;) await sleep(50);
        }
        if (i % 2) confirms.push(q.publishConfirmed(`f${i}`));
        else q.publish(`f${i}`);
        if (i % 200 === 199) await sleep(100);
      }
      const outcomes = await Promise.allSettled(confirms);
      const failed = outcomes.filter((o) => o.status === 'rejected');
      assert.strictEqual(failed.length, 0, `publishConfirmed failures: ${failed.slice(0, 3).map((o) => o.reason).join('; ')}`);
      let timer;
      const deadline = new Promise((r) => { timer = setTimeout(() => r('timeout'), 150000); });
      const r = await Promise.race([received.then(() => 'ok'), deadline]);
      clearTimeout(timer);
      const missing = [];
      for (let i = 0; i < N && missing.length < 10; i++) if (!seen.has(`f${i}`)) missing.push(`f${i}`);
      assert.strictEqual(r, 'ok', `missing ${N - seen.size} (first: ${missing.join(' ')}); stats ${JSON.stringify(q.stats())}`);
      assert.strictEqual(seen.size, N);
      assert.ok(closes >= 3, `the broker's connections were closed ${closes} times`);
      process.stderr.write(`# fault: ${N} distinct of ${deliveries} deliveries (${deliveries - N} duplicates), ` +
        `${closes} close_all_connections, ${conn.stats().connects} connects\n`);
    } finally {
      faulting = false;
      await faults;
      await conn.close(10000);
      amqp.setLogger(console, 'warn');
    }
  });
