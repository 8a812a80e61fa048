/* Shared helpers for the C test programs of resilient-amqp.
 *
 * Include this first in every test program (it defines _GNU_SOURCE for
 * pthread_getname_np, usleep and friends under -std=c11).
 *
 * Conventions (checked by tests/c_programs.rs):
 *   - one line per check on stdout: "PASS <name>" or "FAIL <name>: <reason>";
 *     informational lines start with "# ". Nothing else may appear on stdout
 *     (the library must never print there).
 *   - the program exits 0 only when every check passed.
 */
#ifndef RA_TEST_H
#define RA_TEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "resilient_amqp.h"

/* valgrind's client requests (from the valgrind package), when installed:
 * see ra_forked_child_exit. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define RA_HAVE_VALGRIND_H 1
#endif
#endif

/* A URI where nothing listens: the library keeps reconnecting in the
 * background, which lets us test everything that works while disconnected
 * without a broker. Port 1 on loopback is refused at once. */
#define RA_DOWN_URI "amqp://guest:guest@127.0.0.1:1/%2f"

static int ra_failures = 0;
static int ra_checks = 0;

static inline void ra_pass(const char *name) {
  ra_checks++;
  printf("PASS %s\n", name);
}

static inline void ra_fail(const char *name, const char *fmt, ...) {
  va_list ap;
  ra_checks++;
  ra_failures++;
  printf("FAIL %s: ", name);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
}

/* CHECK(name, condition, "printf format for the failure reason", ...) */
#define CHECK(name, cond, ...)     \
  do {                             \
    if (cond) {                    \
      ra_pass(name);               \
    } else {                       \
      ra_fail(name, __VA_ARGS__);  \
    }                              \
  } while (0)

static inline const char *ra_last_error_str(void) {
  /* Thread-local scratch for failure messages only. */
  static _Thread_local char buf[512];
  amqp_last_error(buf, sizeof buf);
  return buf;
}

/* Checks that `rc` equals `want`; on failure names both codes and the last
 * error of this thread. Returns whether it matched. */
static inline bool ra_check_rc(const char *name, amqp_result rc, amqp_result want) {
  if (rc == want) {
    ra_pass(name);
    return true;
  }
  ra_fail(name, "got %s (%d), want %s (%d); last error: \"%s\"",
          amqp_result_str(rc), (int)rc, amqp_result_str(want), (int)want,
          ra_last_error_str());
  return false;
}
#define CHECK_RC(name, call, want) ra_check_rc(name, (call), (want))

static inline void ra_info(const char *fmt, ...) {
  va_list ap;
  printf("# ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
}

static inline uint64_t ra_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void ra_sleep_ms(unsigned ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000u;
  ts.tv_nsec = (long)(ms % 1000u) * 1000000L;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static const char *ra_prog_name = "test";

/* The factor for time bounds: RA_TEST_TIME_SCALE (an integer 1..100, default
 * 1). scripts/memcheck.sh (through tests/c_programs.rs) sets it when the
 * programs run under valgrind or ASan, which make everything slower. It
 * scales ra_init's alarm(), RA_WAIT_UNTIL and whatever a test wraps in
 * ra_scaled_ms(); it never shortens anything. */
static inline unsigned ra_time_scale(void) {
  static atomic_uint scale; /* 0 until read; any thread may read it first */
  unsigned s = atomic_load(&scale);
  if (s == 0) {
    const char *v = getenv("RA_TEST_TIME_SCALE");
    long n = v != NULL ? strtol(v, NULL, 10) : 1;
    s = n >= 1 && n <= 100 ? (unsigned)n : 1u;
    atomic_store(&scale, s);
  }
  return s;
}

static inline uint64_t ra_scaled_ms(uint64_t ms) { return ms * ra_time_scale(); }

static inline void ra_on_alarm(int sig) {
  static const char msg1[] = "FAIL ";
  static const char msg2[] = ": timed out (deadlock or hang), killed by alarm()\n";
  (void)sig;
  /* async-signal-safe only */
  if (write(STDOUT_FILENO, msg1, sizeof msg1 - 1) < 0) {
  }
  if (write(STDOUT_FILENO, ra_prog_name, strlen(ra_prog_name)) < 0) {
  }
  if (write(STDOUT_FILENO, msg2, sizeof msg2 - 1) < 0) {
  }
  _exit(3);
}

/* Line-buffered stdout (so output survives an alarm) and an overall time
 * bound for the whole program. */
static inline void ra_init(const char *prog, unsigned timeout_s) {
  ra_prog_name = prog;
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGALRM, ra_on_alarm);
  alarm(timeout_s * ra_time_scale());
}

/* The broker URI of the test environment; exits with a clear FAIL when it is
 * missing (broker tests must never pass silently). */
static inline const char *ra_broker_uri(void) {
  const char *uri = getenv("RESILIENT_AMQP_TEST_URI");
  if (uri == NULL || uri[0] == '\0') {
    printf("FAIL setup: RESILIENT_AMQP_TEST_URI is not set; run `bash scripts/test.sh`, "
           "which starts a private RabbitMQ node and sets it\n");
    exit(2);
  }
  return uri;
}

/* Runs "$RESILIENT_AMQP_TEST_CTL <args>" through sh -c; returns its exit
 * status (or -1 when the variable is unset). Output goes to stderr so stdout
 * keeps only PASS/FAIL lines. */
static inline int ra_ctl(const char *args) {
  const char *ctl = getenv("RESILIENT_AMQP_TEST_CTL");
  char cmd[1024];
  int st;
  if (ctl == NULL || ctl[0] == '\0') return -1;
  snprintf(cmd, sizeof cmd, "%s %s 1>&2", ctl, args);
  st = system(cmd);
  if (st == -1) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* A queue/exchange name unique to this run. */
static inline void ra_unique_name(char *buf, size_t cap, const char *prefix) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  snprintf(buf, cap, "%s-%ld-%ld-%ld", prefix, (long)getpid(), (long)ts.tv_sec,
           ts.tv_nsec / 1000);
}

/* Polls `cond` every 10 ms until it is true or `timeout_ms` (times
 * ra_time_scale()) passed. */
#define RA_WAIT_UNTIL(cond, timeout_ms)                                   \
  do {                                                                    \
    uint64_t ra_deadline_ = ra_now_ms() + ra_scaled_ms(timeout_ms);       \
    while (!(cond) && ra_now_ms() < ra_deadline_) ra_sleep_ms(10);        \
  } while (0)

/* Deletes a queue left by a test, best effort (ignored without CTL). */
static inline void ra_delete_queue(const char *name) {
  char args[512];
  snprintf(args, sizeof args, "delete_queue '%s' >/dev/null 2>&1", name);
  (void)ra_ctl(args);
}

/* Ends a child forked AFTER this process used the library (the refused-fork
 * tests). Such a child has only the thread that called fork(); the memory
 * the library's other threads owned in the parent (their I/O buffers, the
 * objects held by their stacks and thread-locals) is still mapped in the
 * child but nothing in it points there any more, so a leak checker run at
 * the child's exit reports megabytes "definitely lost" that belong to the
 * parent's threads, not to anything the child did. The child therefore
 * ends with _exit() (what POSIX asks of a child of a multi-threaded
 * process anyway; it also skips LeakSanitizer, which runs from exit())
 * and, under valgrind, turns the leak check off for this process only.
 * Memory errors in the child are still reported, and children forked
 * before the library was used (ordinary processes) are checked in full. */
static inline void ra_forked_child_exit(int status) {
  fflush(stdout);
  fflush(stderr);
#ifdef RA_HAVE_VALGRIND_H
  if (RUNNING_ON_VALGRIND) VALGRIND_CLO_CHANGE("--leak-check=no");
#endif
  _exit(status);
}

static inline int ra_finish(void) {
  printf("# %s: %d checks, %d failed\n", ra_prog_name, ra_checks, ra_failures);
  fflush(stdout);
  return ra_failures == 0 && ra_checks > 0 ? 0 : 1;
}

#endif /* RA_TEST_H */
