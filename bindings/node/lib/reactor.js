// Watches the library's notification descriptors from the event loop.
//
// Node cannot wait for a descriptor's readability without reading it (and the
// library's descriptors must never be read), so one libc poll() over every
// descriptor that wants watching runs as a koffi asynchronous call on libuv's
// thread pool: one pool thread per process, whatever the number of queues.
// When it returns, the main thread calls each ready source, which takes
// what waits with the library's non-blocking calls (timeout 0). No library
// call with a timeout runs on the event loop, and no library thread ever
// calls JavaScript.
//
// A pipe of our own wakes the poll() when the set of descriptors changes, and
// at process exit (libuv joins its pool threads at exit, so a poll() left
// waiting would delay the exit by its timeout). The timeout (1 s) bounds that
// delay should the wake ever be missed.
'use strict';
const { native } = require('./native');

const POLLIN = 0x001;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const TIMEOUT_MS = 1000;

class Reactor {
  constructor() {
    const { libc } = native();
    this.libc = libc;
    const fds = [0, 0];
    if (libc.pipe2(fds, O_NONBLOCK | O_CLOEXEC) !== 0) throw new Error('resilient-amqp: pipe2 failed');
    [this.wakeRead, this.wakeWrite] = fds;
    /** @type {Set<{fd:number, wantsFd:()=>boolean, onReadable:()=>void}>} */
    this.sources = new Set();
    this.armed = false; // a poll() is running on the pool
    this.armedSources = [];
    this.woken = false; // a wake byte was written during this poll()
    this.scheduled = false;
    this.toClose = [];
    this.scratch = Buffer.alloc(64);
    this.wakeByte = Buffer.from([1]);
    process.on('exit', () => this.wake());
  }

  add(source) {
    this.sources.add(source);
    this.update();
  }

  remove(source) {
    this.sources.delete(source);
    this.update();
  }

  /** Closes a descriptor once no poll() watches it. */
  closeFd(fd) {
    if (this.armed && this.armedSources.some((s) => s.fd === fd)) {
      this.toClose.push(fd);
      this.wake();
    } else {
      this.libc.close(fd);
    }
  }

  /** Call when a source's wantsFd() may have changed. */
  update() {
    if (this.armed) {
      // Wake the running poll() only if the set it watches is now wrong.
      const want = [...this.sources].filter((s) => s.wantsFd());
      const same = want.length === this.armedSources.length &&
        want.every((s) => this.armedSources.includes(s));
      if (!same) this.wake();
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (!this.armed) this.arm();
    });
  }

  wake() {
    if (!this.armed || this.woken) return;
    this.woken = true;
    this.libc.write(this.wakeWrite, this.wakeByte, 1);
  }

  arm() {
    const list = [...this.sources].filter((s) => s.wantsFd());
    if (list.length === 0) return; // nothing to watch: the loop may end
    const n = list.length + 1;
    const pfd = Buffer.alloc(8 * n);
    pfd.writeInt32LE(this.wakeRead, 0);
    pfd.writeInt16LE(POLLIN, 4);
    for (let i = 0; i < list.length; i++) {
      pfd.writeInt32LE(list[i].fd, 8 * (i + 1));
      pfd.writeInt16LE(POLLIN, 8 * (i + 1) + 4);
    }
    this.armed = true;
    this.woken = false;
    this.armedSources = list;
    this.libc.poll.async(pfd, n, TIMEOUT_MS, (err, rc) => this.fired(err, rc, pfd, list));
  }

  fired(err, rc, pfd, list) {
    this.armed = false;
    this.armedSources = [];
    if (pfd.readInt16LE(6) !== 0) {
      while (this.libc.read(this.wakeRead, this.scratch, this.scratch.length) > 0) { /* drain */ }
    }
    this.woken = false;
    for (const fd of this.toClose.splice(0)) this.libc.close(fd);
    if (!err && rc > 0) {
      for (let i = 0; i < list.length; i++) {
        const revents = pfd.readInt16LE(8 * (i + 1) + 6);
        if (revents !== 0 && this.sources.has(list[i])) {
          try {
            list[i].onReadable();
          } catch (e) {
            process.emitWarning(`resilient-amqp: a poll source failed: ${e && e.stack}`);
          }
        }
      }
    }
    this.arm();
  }
}

let reactor = null;
function getReactor() {
  if (!reactor) reactor = new Reactor();
  return reactor;
}

module.exports = { getReactor };
