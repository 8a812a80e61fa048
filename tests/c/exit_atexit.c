/* Library calls from atexit() handlers (and so from C++ static destructors,
 * which run at the same point). A common cleanup pattern:
 *
 *     static void cleanup(void) { amqp_close_graceful(conn, 5000, NULL); }
 *     ... atexit(cleanup); ... return 0;
 *
 * glibc's exit() first runs the thread-local destructors of the thread that
 * called it, then the atexit handlers on that same thread. The library's
 * threads are still alive at that point, so every call must work as usual:
 * no abort, nothing printed, and amqp_close_graceful still waits for the
 * confirms.
 *
 * Each scenario runs in a child forked from this process (which never calls
 * the library); the atexit handler turns a wrong result into the exit status
 * (60 + the result code; 59: messages left unsent), a crash shows as a
 * signal.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define BOUND_MS 20000u

static const char *broker_uri;
static amqp_connection_handle conn;
static amqp_queue_handle qa, qb;
static char na[128], nb[128];
static atomic_uint in_cb;

static void publish_at_exit(void) {
  char buf[64];
  amqp_result rc = amqp_publish(qa, "at-exit", 7);
  if (rc != AMQP_OK) _exit(60 + (int)rc);
  if (amqp_last_error(buf, sizeof buf) != 0) _exit(58);
}

static void close_at_exit(void) {
  uint64_t unsent = 999;
  amqp_result rc = amqp_close_graceful(conn, (uint32_t)ra_scaled_ms(10000), &unsent);
  if (rc != AMQP_OK) _exit(60 + (int)rc);
  if (unsent != 0) _exit(59);
}

static amqp_disposition ack_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  atomic_fetch_add(&in_cb, 1);
  return AMQP_ACK;
}

/* publishes to B from the callback, then exits: the atexit handler runs on
 * this library thread */
static amqp_disposition publish_then_exit_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  if (atomic_fetch_add(&in_cb, 1) == 0) {
    for (int i = 0; i < 100; i++)
      if (amqp_publish(qb, "from-cb", 7) != AMQP_OK) _exit(94);
    exit(23);
  }
  return AMQP_ACK;
}

static void connect_live(void) {
  if (amqp_connect(broker_uri, NULL, &conn) != AMQP_OK) _exit(90);
  if (amqp_wait_connected(conn, (uint32_t)ra_scaled_ms(15000)) != AMQP_OK) _exit(91);
  if (amqp_queue_open(conn, na, NULL, NULL, "durable=false", &qa) != AMQP_OK) _exit(92);
  if (amqp_queue_open(conn, nb, NULL, NULL, "durable=false", &qb) != AMQP_OK) _exit(92);
}

static int scenario(int which) {
  switch (which) {
    case 0: /* return from main; the handler publishes (the thread used the library) */
      if (amqp_connect(RA_DOWN_URI, NULL, &conn) != AMQP_OK) _exit(90);
      if (amqp_queue_open(conn, "ra-atexit-down", NULL, NULL, NULL, &qa) != AMQP_OK) _exit(92);
      if (amqp_publish(qa, "before", 6) != AMQP_OK) _exit(93);
      atexit(publish_at_exit);
      return 21;
    case 1: /* return from main; the handler closes gracefully */
      connect_live();
      atexit(close_at_exit);
      if (amqp_consume(qa, ack_cb, NULL, 4) != AMQP_OK) _exit(93);
      for (int i = 0; i < 2000; i++)
        if (amqp_publish(qa, "close-at-exit", 13) != AMQP_OK) _exit(93);
      return 22;
    case 2: /* exit() inside a consume callback; the handler closes gracefully */
      connect_live();
      atexit(close_at_exit);
      if (amqp_consume(qa, publish_then_exit_cb, NULL, 2) != AMQP_OK) _exit(93);
      amqp_publish(qa, "go", 2);
      ra_sleep_ms((unsigned)ra_scaled_ms(BOUND_MS) * 2);
      return 80;
    default:
      return 100;
  }
}

static const char *names[] = {
    "atexit_publish_after_return_from_main",
    "atexit_close_graceful_after_return_from_main",
    "atexit_close_graceful_after_exit_in_callback",
};
static const int want_status[] = {21, 22, 23};

int main(void) {
  ra_init("exit_atexit", 120);
  broker_uri = ra_broker_uri();

  for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
    ra_unique_name(na, sizeof na, "ra-atexit-a");
    ra_unique_name(nb, sizeof nb, "ra-atexit-b");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      ra_fail(names[i], "fork: %s", strerror(errno));
      continue;
    }
    if (pid == 0) {
      alarm(0);
      signal(SIGALRM, SIG_DFL);
      return scenario(i);
    }
    uint64_t t0 = ra_now_ms();
    int status = 0;
    pid_t r = 0;
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && ra_now_ms() - t0 < ra_scaled_ms(BOUND_MS))
      ra_sleep_ms(10);
    uint64_t dt = ra_now_ms() - t0;
    if (r == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ra_fail(names[i], "still running after %" PRIu64 " ms (hang at exit); killed", dt);
    } else if (WIFSIGNALED(status)) {
      ra_fail(names[i], "killed by signal %d (%s) after %" PRIu64 " ms (see stderr)",
              WTERMSIG(status), strsignal(WTERMSIG(status)), dt);
    } else if (WEXITSTATUS(status) != want_status[i]) {
      ra_fail(names[i],
              "exit status %d, want %d (90-94: setup failed; 58: last error set after a "
              "successful call; 59: close left messages unsent; 60+code: the call in the "
              "handler returned code)",
              WEXITSTATUS(status), want_status[i]);
    } else {
      ra_pass(names[i]);
      ra_info("%s: child done in %" PRIu64 " ms", names[i], dt);
    }
    ra_delete_queue(na);
    ra_delete_queue(nb);
  }
  return ra_finish();
}
