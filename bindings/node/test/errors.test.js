'use strict';
const test = require('node:test');
const assert = require('node:assert');
const amqp = require('..');
const { URI, qname, QOPTS } = require('./helpers');

test('8 concurrent failing calls each get their own error text', async () => {
  const conn = await amqp.connect(URI);
  try {
    const names = Array.from({ length: 8 }, (_, i) => `bogus_key_${i}`);
    const results = await Promise.allSettled(
      names.map((key) => conn.queue(qname('bad'), { [key]: 1 })));
    results.forEach((r, i) => {
      assert.strictEqual(r.status, 'rejected');
      assert.ok(r.reason instanceof amqp.AmqpError);
      assert.strictEqual(r.reason.code, 'AMQP_ERR_INVALID_ARGUMENT');
      assert.strictEqual(r.reason.errno, 1);
      assert.match(r.reason.message, new RegExp(`unknown option '${names[i]}'`));
      for (let j = 0; j < 8; j++) {
        if (j !== i) assert.ok(!r.reason.message.includes(`'${names[j]}'`), 'no other call\'s text');
      }
    });
  } finally {
    await conn.close(5000);
  }
});

test('the broker\'s refusal comes with its text; synchronous errors too', async () => {
  const conn = await amqp.connect(URI);
  try {
    const name = qname('406');
    await conn.queue(name, { ...QOPTS, maxLength: 10 });
    await assert.rejects(conn.queue(name, { ...QOPTS, maxLength: 20 }), (e) => {
      assert.strictEqual(e.code, 'AMQP_ERR_BROKER');
      assert.match(e.message, /406 PRECONDITION_FAILED/);
      return true;
    });
    await assert.rejects(amqp.connect('amqp://guest:guest@127.0.0.1:1/%2f', { bogusOption: 1 }), (e) => {
      assert.strictEqual(e.code, 'AMQP_ERR_INVALID_ARGUMENT');
      assert.match(e.message, /bogus_option/);
      return true;
    });
    const q = await conn.queue(qname('toolarge'), QOPTS);
    assert.throws(() => q.publish('x', { priority: 1, deliveryMode: 3 }), (e) => {
      assert.strictEqual(e.code, 'AMQP_ERR_INVALID_ARGUMENT');
      assert.match(e.message, /delivery_mode/);
      return true;
    });
    assert.throws(() => q.publish('x', { nonsense: 1 }), TypeError);
  } finally {
    await conn.close(5000);
  }
  await assert.rejects(conn.queue('after-close', QOPTS), (e) => e.code === 'AMQP_ERR_CLOSED');
});

test('a refused consumer rejects with the broker\'s text (amqp_consume_pull_e)', async () => {
  const holder = await amqp.connect(URI);
  const conn = await amqp.connect(URI);
  try {
    const name = qname('exclusive');
    const held = await holder.queue(name, { ...QOPTS, consumerExclusive: true });
    await held.consume(() => amqp.ACK);
    const q = await conn.queue(name, QOPTS);
    await assert.rejects(q.consume(() => amqp.ACK), (e) => {
      assert.strictEqual(e.code, 'AMQP_ERR_BROKER');
      assert.match(e.message, /exclusive/);
      return true;
    });
  } finally {
    await conn.close(5000);
    await holder.close(5000);
  }
});
