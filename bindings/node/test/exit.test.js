'use strict';
const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
const { spawn } = require('child_process');
const { qname } = require('./helpers');

function runChild(mode) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'exit-child.js'), qname(`exit-${mode}`), mode],
      { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30000);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr });
    });
  });
}

for (const [mode, runs, want] of [['exit', 5, 0], ['drain', 5, 0], ['throw', 2, 1]]) {
  test(`process ${mode} without close, consumer running, messages in flight: ${runs} times in a row`, async () => {
    for (let i = 0; i < runs; i++) {
      const r = await runChild(mode);
      assert.strictEqual(r.signal, null, `run ${i + 1}: killed by ${r.signal} (a hang or an abort)\n${r.stderr}`);
      assert.strictEqual(r.code, want, `run ${i + 1}: exit code ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, /ending/, `run ${i + 1}: the child reached its end\n${r.stderr}`);
    }
  });
}
