// Publish through a broker restart, nothing lost:
//   node examples/restart.js URI [CTL]
// With CTL (a command prefix running rabbitmqctl, e.g. "scripts/broker.sh ctl")
// the broker app is stopped for 3 s halfway through; without it, restart
// your broker by hand while it runs.
'use strict';
const { execSync } = require('child_process');
const amqp = require('..');

async function main() {
  const [uri = 'amqp://guest:guest@127.0.0.1:5672/%2f', ctl] = process.argv.slice(2);
  const conn = await amqp.connect(uri);
  const q = await conn.queue('node-restart-demo', { durable: true });
  const N = 5000;
  const seen = new Set();
  let done;
  const all = new Promise((r) => { done = r; });
  await q.consume((m) => {
    seen.add(m.text);
    if (seen.size === N) done();
  });

  const confirms = [];
  for (let i = 0; i < N; i++) {
    if (i === N / 2 && ctl) {
      console.log('stopping the broker for 3 s');
      execSync(`${ctl} stop_app`, { stdio: 'ignore' });
      setTimeout(() => execSync(`${ctl} start_app`, { stdio: 'ignore' }), 3000);
    }
    // Returns at once, broker up or down: the library keeps the message
    // until the broker confirmed it, and sends it again after a reconnect.
    confirms.push(q.publishConfirmed(`message ${i}`));
    if (i % 100 === 99) await new Promise((r) => setTimeout(r, 10));
  }
  await Promise.all(confirms);
  console.log(`all ${N} confirmed; ${q.stats().resent} resent after the outage`);
  await all;
  console.log(`all ${N} received (${conn.stats().connects} connects)`);
  console.log(`unsent at close: ${await conn.close(5000)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
