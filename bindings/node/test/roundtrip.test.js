'use strict';
const test = require('node:test');
const assert = require('node:assert');
const amqp = require('..');
const { URI, CTL, qname, QOPTS, ctl, until } = require('./helpers');

test('publish + consume round trip: Buffer, string, properties and typed headers', async () => {
  const conn = await amqp.connect(URI);
  try {
    const q = await conn.queue(qname('roundtrip'), QOPTS);
    const bytes = Buffer.from([0, 1, 2, 255, 0]);
    q.publish(bytes);
    q.publish('héllo wörld ✓');
    q.publish('', {});
    const when = new Date(1700000000 * 1000);
    q.publish(Buffer.from('{"a":1}'), {
      contentType: 'application/json',
      contentEncoding: 'identity',
      correlationId: 'corr-1',
      replyTo: 'replies',
      expiration: 60000,
      messageId: 'msg-1',
      timestamp: when,
      type: 'order.created',
      appId: 'node-test',
      priority: 0,
      deliveryMode: 1,
      headers: {
        str: 'text ✓',
        int: 42,
        neg: -7,
        big: 2n ** 60n,
        dbl: 1.25,
        yes: true,
        no: false,
        nil: null,
        raw: Buffer.from([9, 8, 7]),
        when,
        list: [1, 'two', [3]],
        nested: { deep: { x: 'y' } },
        i8: amqp.types.int8(-3),
        u16: amqp.types.uint16(65000),
        f32: amqp.types.float(0.5),
        dec: amqp.types.decimal(12345, 2),
      },
    });
    const got = [];
    await q.consume((m) => {
      got.push(m);
    });
    await until(() => got.length === 4, 10000, 'four deliveries');
    got.sort((a, b) => a.deliveryTag - b.deliveryTag);
    assert.deepStrictEqual(got[0].body, bytes);
    assert.strictEqual(got[1].text, 'héllo wörld ✓');
    assert.strictEqual(got[2].body.length, 0);
    const m = got[3];
    assert.strictEqual(m.text, '{"a":1}');
    assert.strictEqual(m.routingKey, q.name);
    assert.strictEqual(m.exchange, '');
    assert.strictEqual(m.redelivered, false);
    assert.deepStrictEqual(m.properties, {
      contentType: 'application/json',
      contentEncoding: 'identity',
      correlationId: 'corr-1',
      replyTo: 'replies',
      expiration: '60000',
      messageId: 'msg-1',
      timestamp: when,
      type: 'order.created',
      appId: 'node-test',
      priority: 0,
      deliveryMode: 1,
    });
    const h = m.headers;
    assert.strictEqual(h.str, 'text ✓');
    assert.strictEqual(h.int, 42);
    assert.strictEqual(h.neg, -7);
    assert.strictEqual(h.big, 2n ** 60n);
    assert.strictEqual(h.dbl, 1.25);
    assert.strictEqual(h.yes, true);
    assert.strictEqual(h.no, false);
    assert.strictEqual(h.nil, null);
    assert.deepStrictEqual(h.raw, Buffer.from([9, 8, 7]));
    assert.deepStrictEqual(h.when, when);
    assert.deepStrictEqual(h.list, [1, 'two', [3]]);
    assert.deepStrictEqual(h.nested, { deep: { x: 'y' } });
    assert.strictEqual(h.i8, -3);
    assert.strictEqual(h.u16, 65000);
    assert.strictEqual(h.f32, 0.5);
    assert.strictEqual(h.dec.value, 12345);
    assert.strictEqual(h.dec.scale, 2);
    await until(() => q.stats().acked === 4, 5000, 'four acks');
    const s = q.stats();
    assert.strictEqual(s.published, 4);
    assert.strictEqual(s.handled, 4);
  } finally {
    assert.strictEqual(await conn.close(5000), 0);
  }
});

test('stop and start pause and resume the consumer', async () => {
  const conn = await amqp.connect(URI);
  try {
    const q = await conn.queue(qname('stopstart'), QOPTS);
    const got = [];
    await q.consume((m) => { got.push(m.text); });
    q.publish('one');
    await until(() => got.length === 1, 10000, 'first delivery');
    await q.stop();
    q.publish('two');
    await new Promise((r) => setTimeout(r, 500));
    assert.deepStrictEqual(got, ['one']);
    q.start();
    await until(() => got.length === 2, 10000, 'second delivery after start');
    assert.deepStrictEqual(got, ['one', 'two']);
  } finally {
    await conn.close(5000);
  }
});

test('consumer.cancel() ends the broker consumer; consume() again gets what follows', async (t) => {
  if (!CTL) {
    t.skip('RESILIENT_AMQP_TEST_CTL is not set');
    return;
  }
  const conn = await amqp.connect(URI);
  try {
    const name = qname('cancel');
    const q = await conn.queue(name, QOPTS);
    const consumers = async () => {
      const out = await ctl('-q list_queues --no-table-headers name consumers');
      const row = out.split('\n').map((l) => l.trim().split(/\s+/)).find((f) => f[0] === name);
      return row ? Number(row[1]) : -1;
    };
    const got = [];
    const c = await q.consume((m) => { got.push(m.body.toString()); });
    q.publish('one');
    await until(() => got.length === 1, 10000, 'the first message');
    await c.cancel(5000);
    let n = -1;
    for (let i = 0; i < 200 && n !== 0; i++) {
      n = await consumers();
      if (n !== 0) await new Promise((r) => setTimeout(r, 50));
    }
    assert.strictEqual(n, 0, 'the broker consumer was not cancelled');
    await q.consume((m) => { got.push(m.body.toString()); });
    q.publish('two');
    await until(() => got.length === 2, 10000, 'the second message');
    assert.deepStrictEqual(got, ['one', 'two']);
  } finally {
    await conn.close(5000);
  }
});

