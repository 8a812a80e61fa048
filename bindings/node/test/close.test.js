'use strict';
const test = require('node:test');
const assert = require('node:assert');
const amqp = require('..');
const { native } = require('../lib/native');
const { URI, qname, QOPTS, until, captureLogger } = require('./helpers');

const hasReports = () => !!native().reports_pull;

test('stats are readable; library logs reach the logger set', async () => {
  const log = captureLogger();
  amqp.setLogger(log, 'info');
  const conn = await amqp.connect(URI);
  try {
    const cs = conn.stats();
    assert.strictEqual(cs.state, 'connected');
    assert.ok(cs.connects >= 1);
    const q = await conn.queue(qname('stats'), QOPTS);
    for (let i = 0; i < 10; i++) q.publish(`s${i}`);
    await until(() => q.stats().confirmed === 10, 10000, '10 confirmed');
    const s = q.stats();
    assert.strictEqual(s.published, 10);
    assert.strictEqual(s.buffered, 0);
    assert.strictEqual(conn.stats().queues, 1);
    await until(() => log.lines.some((l) => l.level === 'info' && /connected/i.test(l.msg)), 5000,
      'an INFO line about the connection');
    assert.ok(log.lines.every((l) => l.msg.startsWith('resilient-amqp: ')));
  } finally {
    assert.strictEqual(await conn.close(5000), 0, 'everything confirmed: 0 unsent');
    amqp.setLogger(console, 'warn');
  }
});

test('close returns the unsent count; pending publishConfirmed reject as unsent', async () => {
  amqp.setLogger(null);
  // Nothing listens on port 1: the messages stay buffered.
  const conn = await amqp.connect('amqp://guest:guest@127.0.0.1:1/%2f',
    { waitConnectedMs: 0, reconnectDelayMs: 50, reconnectDelayMaxMs: 100 });
  const q = await conn.queue('never-declared', QOPTS);
  for (let i = 0; i < 5; i++) q.publish(`u${i}`);
  assert.strictEqual(q.stats().buffered, 5);
  const pending = hasReports() ? [q.publishConfirmed('c1'), q.publishConfirmed('c2')] : [];
  const outcomes = pending.map((p) => p.then(() => { throw new Error('resolved'); }, (e) => e));
  const unsent = await conn.close(300);
  assert.strictEqual(unsent, 5 + pending.length);
  for (const p of outcomes) {
    await assert.rejects(p.then((e) => { throw e; }), (e) => {
      assert.ok(e instanceof amqp.PublishError);
      assert.strictEqual(e.status, 'unsent');
      assert.strictEqual(e.code, 'AMQP_REPORT_UNSENT');
      return true;
    });
  }
  assert.throws(() => q.publish('late'), (e) => e.code === 'AMQP_ERR_INVALID_HANDLE');
  amqp.setLogger(console, 'warn');
});

test('publishConfirmed resolves when the broker confirmed; failures reject with the status and reason',
  { skip: hasReports() ? false : 'this library has no amqp_reports_pull yet' }, async () => {
    const conn = await amqp.connect(URI);
    try {
      const q = await conn.queue(qname('confirmed'), QOPTS);
      const r = await q.publishConfirmed('hello', { messageId: 'x' });
      assert.ok(r.attempts >= 1);
      const all = await Promise.all(Array.from({ length: 500 }, (_, i) => q.publishConfirmed(`m${i}`)));
      assert.strictEqual(all.length, 500);
      // A routing key of its own that no queue takes: UNROUTABLE.
      await assert.rejects(q.publishConfirmed('lost', { routingKey: `nowhere-${Date.now()}` }), (e) => {
        assert.ok(e instanceof amqp.PublishError);
        assert.strictEqual(e.status, 'unroutable');
        assert.strictEqual(e.code, 'AMQP_REPORT_UNROUTABLE');
        assert.ok(e.reason.length > 0);
        return true;
      });
      assert.strictEqual(q.stats().pendingConfirms, 0);
    } finally {
      assert.strictEqual(await conn.close(5000), 0);
    }
  });

test('close waits for async handlers in flight and applies their acks', async () => {
  const name = qname('closewait');
  const conn = await amqp.connect(URI);
  const q = await conn.queue(name, { ...QOPTS, prefetch: 5 });
  for (let i = 0; i < 5; i++) q.publish(`w${i}`);
  let started = 0;
  let finished = 0;
  await q.consume(async () => {
    started++;
    await new Promise((r) => setTimeout(r, 300));
    finished++;
  });
  await until(() => started === 5, 10000, 'five handlers running');
  assert.strictEqual(await conn.close(5000), 0);
  assert.strictEqual(finished, 5, 'close returned after the handlers');
  // Their acks reached the broker: nothing comes back.
  const conn2 = await amqp.connect(URI);
  try {
    const q2 = await conn2.queue(name, QOPTS);
    let again = 0;
    await q2.consume(() => { again++; });
    await new Promise((r) => setTimeout(r, 500));
    assert.strictEqual(again, 0, 'no delivery came back');
  } finally {
    await conn2.close(5000);
  }
});
