'use strict';
const test = require('node:test');
const assert = require('node:assert');
const amqp = require('..');
const { URI, qname, QOPTS, until, captureLogger } = require('./helpers');

test('a handler that throws on every other call never acks: requeued, logged, counted, 0 lost', async () => {
  const log = captureLogger();
  amqp.setLogger(log, 'warn');
  const conn = await amqp.connect(URI);
  try {
    const q = await conn.queue(qname('throws'), QOPTS);
    const N = 300;
    for (let i = 0; i < N; i++) q.publish(`m${i}`);
    let calls = 0;
    const acked = new Set();
    let thrown = 0;
    await q.consume((m) => {
      if (calls++ % 2 === 1) {
        thrown++;
        throw new Error(`handler failure on ${m.text}`);
      }
      acked.add(m.text);
    });
    await until(() => acked.size === N, 30000, `${N} distinct messages handled`);
    await until(() => q.stats().acked >= N, 5000, 'acks applied');
    const s = q.stats();
    assert.ok(thrown > 0);
    assert.strictEqual(s.handlerErrors, thrown, 'every throw counted');
    assert.ok(s.requeued >= thrown, `requeued ${s.requeued} >= thrown ${thrown}`);
    assert.strictEqual(s.acked, N, 'only the handler returns acked');
    const warned = log.lines.filter((l) => l.level === 'warn' && /handler failed/.test(l.msg));
    assert.strictEqual(warned.length, thrown, 'every throw logged');
    assert.match(warned[0].msg, /handler failure on m/);
  } finally {
    await conn.close(5000);
    amqp.setLogger(console, 'warn');
  }
});

test('async handlers: a resolved Promise acks, a rejected one requeues; concurrency bounds them', async () => {
  const log = captureLogger();
  amqp.setLogger(log, 'warn');
  const conn = await amqp.connect(URI);
  try {
    const q = await conn.queue(qname('async'), { ...QOPTS, prefetch: 50 });
    const N = 200;
    for (let i = 0; i < N; i++) q.publish(`m${i}`);
    const done = new Set();
    let running = 0;
    let maxRunning = 0;
    let rejected = 0;
    const seen = new Map();
    await q.consume(async (m) => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      try {
        await new Promise((r) => setTimeout(r, 2));
        const k = (seen.get(m.text) || 0) + 1;
        seen.set(m.text, k);
        // The first delivery of every third message fails.
        if (k === 1 && Number(m.text.slice(1)) % 3 === 0) {
          rejected++;
          throw new Error('async failure');
        }
        done.add(m.text);
        return undefined;
      } finally {
        running--;
      }
    }, { concurrency: 8 });
    await until(() => done.size === N, 30000, `${N} handled`);
    await until(() => q.stats().acked >= N, 5000, 'acks applied');
    const s = q.stats();
    assert.ok(maxRunning <= 8, `at most 8 at once (saw ${maxRunning})`);
    assert.ok(maxRunning > 1, 'async handlers ran concurrently');
    assert.strictEqual(s.acked, N);
    assert.strictEqual(s.handlerErrors, rejected);
    assert.ok(s.requeued >= rejected);
    for (let i = 0; i < N; i += 3) assert.ok(seen.get(`m${i}`) >= 2, `m${i} redelivered after its rejection`);
  } finally {
    await conn.close(5000);
    amqp.setLogger(console, 'warn');
  }
});

test('a handler may return REJECT or REQUEUE', async () => {
  const conn = await amqp.connect(URI);
  try {
    const q = await conn.queue(qname('dispo'), QOPTS);
    q.publish('requeue-me');
    q.publish('reject-me');
    const seen = [];
    await q.consume(async (m) => {
      seen.push(m.text);
      if (m.text === 'reject-me') return amqp.REJECT;
      if (m.text === 'requeue-me' && !m.redelivered) return amqp.REQUEUE;
      return amqp.ACK;
    });
    await until(() => q.stats().acked === 1 && q.stats().rejected === 1, 10000, 'one ack, one reject');
    assert.strictEqual(q.stats().requeued, 1);
    assert.deepStrictEqual(seen.sort(), ['reject-me', 'requeue-me', 'requeue-me']);
  } finally {
    await conn.close(5000);
  }
});
