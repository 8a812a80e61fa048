// Shared by the tests: the broker from the environment, unique queue names.
'use strict';
const { execFile } = require('child_process');

const URI = process.env.RESILIENT_AMQP_TEST_URI || 'amqp://guest:guest@127.0.0.1:5672/%2f';
const CTL = process.env.RESILIENT_AMQP_TEST_CTL || '';

let n = 0;
/** A queue name of this test run (the queues expire 60 s after their last use). */
function qname(what) {
  return `node-${what}-${process.pid}-${Date.now() % 1e6}-${n++}`;
}
const QOPTS = { durable: false, expiresMs: 60000 };

/** Runs `$RESILIENT_AMQP_TEST_CTL args` through sh -c. */
function ctl(args) {
  return new Promise((resolve, reject) => {
    if (!CTL) {
      reject(new Error('RESILIENT_AMQP_TEST_CTL is not set'));
      return;
    }
    execFile('sh', ['-c', `${CTL} ${args}`], { timeout: 60000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${CTL} ${args}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves once cond() is true; rejects after `ms` with `what`. */
async function until(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(10);
  }
}

/** A logger that keeps its lines (and prints nothing). */
function captureLogger() {
  const lines = [];
  const at = (level) => (msg) => lines.push({ level, msg: String(msg) });
  return { lines, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
}

module.exports = { URI, CTL, qname, QOPTS, ctl, sleep, until, captureLogger };
