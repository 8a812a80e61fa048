/* fork() after the library was used: the child has none of the library's
 * threads (runtime, I/O, consumers), so nothing there could ever make
 * progress. Every call in the child must fail at once with AMQP_ERR_CLOSED
 * and a message that names fork -- never hang, never touch the parent's
 * connection -- and the parent must keep working as if nothing happened.
 *
 * Scenarios (each child is bounded by alarm(); the parent waits for it at
 * most CHILD_BOUND_MS):
 *   1. fork from the main thread while connected, with consumers running and
 *      another thread publishing in a loop (so the library is busy at the
 *      moment of the fork). The child calls every function that returns a
 *      code; each returns AMQP_ERR_CLOSED promptly, writes no out-parameter,
 *      and amqp_last_error mentions fork. (The child ends with
 *      ra_forked_child_exit: see ra_test.h for why.)
 *   2. fork from inside a consume callback (a library thread): same answer
 *      in the child.
 *   3. the child exec()s this program again: a fresh image can use the
 *      library normally (what the error message recommends).
 * Afterwards the parent publishes, consumes and closes with nothing unsent.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define CHILD_BOUND_MS 15000u
#define PROMPT_MS 1000u /* "at once": far below every timeout passed in */
#define AFTER 200       /* messages published by the parent after the forks */

static const char *uri;
static amqp_connection_handle conn;
static amqp_queue_handle q;
static char qname[128];
static atomic_uint received, received_after;
static atomic_bool hammer_stop;
static atomic_uint hammered;

static amqp_disposition count_cb(const amqp_delivery *d, void *ud) {
  (void)ud;
  atomic_fetch_add(&received, 1);
  if (d->body_len >= 6 && memcmp(d->body, "after-", 6) == 0) atomic_fetch_add(&received_after, 1);
  return AMQP_ACK;
}

static void *hammer(void *p) {
  (void)p;
  while (!atomic_load(&hammer_stop)) {
    if (amqp_publish(q, "hammer", 6) == AMQP_OK) atomic_fetch_add(&hammered, 1);
    ra_sleep_ms(1);
  }
  return NULL;
}

static void log_cb(amqp_log_level level, const char *message, void *ud) {
  (void)level;
  (void)message;
  (void)ud;
}

static bool mentions_fork(void) { return strstr(ra_last_error_str(), "fork") != NULL; }

/* One call in the child: AMQP_ERR_CLOSED, quickly, with a message about fork. */
#define CHILD_EXPECT_CLOSED(name, call)                                                        \
  do {                                                                                         \
    uint64_t t0_ = ra_now_ms();                                                                \
    amqp_result rc_ = (call);                                                                  \
    uint64_t dt_ = ra_now_ms() - t0_;                                                          \
    CHECK(name, rc_ == AMQP_ERR_CLOSED && mentions_fork() && dt_ < ra_scaled_ms(PROMPT_MS),  \
          "got %s after %" PRIu64 " ms; last error: \"%s\" (want AMQP_ERR_CLOSED at once, "   \
          "naming fork)",                                                                      \
          amqp_result_str(rc_), dt_, ra_last_error_str());                                     \
  } while (0)

/* Scenario 1, in the child. Returns the exit status. */
static int child_calls_everything(void) {
  amqp_connection_handle c2 = 4242;
  amqp_queue_handle q2 = 4343;
  uint64_t unsent = 777;
  amqp_queue_stats qs = {.size = sizeof(amqp_queue_stats)};
  amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
  memset(&qs, 0xAB, sizeof qs);
  memset(&cs, 0xAB, sizeof cs);

  CHILD_EXPECT_CLOSED("child_publish", amqp_publish(q, "from the child", 14));
  CHILD_EXPECT_CLOSED("child_publish_empty", amqp_publish(q, NULL, 0));
  CHILD_EXPECT_CLOSED("child_connect", amqp_connect(uri, NULL, &c2));
  CHECK("child_connect_out_untouched", c2 == 4242, "out = %" PRIu64, c2);
  CHILD_EXPECT_CLOSED("child_wait_connected", amqp_wait_connected(conn, 5000));
  CHILD_EXPECT_CLOSED("child_queue_open", amqp_queue_open(conn, qname, NULL, NULL, "durable=false", &q2));
  CHECK("child_queue_open_out_untouched", q2 == 4343, "out = %" PRIu64, q2);
  CHILD_EXPECT_CLOSED("child_consume", amqp_consume(q, count_cb, NULL, 1));
  CHILD_EXPECT_CLOSED("child_consume_stop", amqp_consume_stop(q));
  CHILD_EXPECT_CLOSED("child_consume_start", amqp_consume_start(q));
  CHILD_EXPECT_CLOSED("child_queue_get_stats", amqp_queue_get_stats(q, &qs));
  CHILD_EXPECT_CLOSED("child_connection_get_stats", amqp_connection_get_stats(conn, &cs));
  {
    amqp_queue_stats want = {.size = sizeof(amqp_queue_stats)};
    amqp_connection_stats wantc = {.size = sizeof(amqp_connection_stats)};
    memset(&want, 0xAB, sizeof want);
    memset(&wantc, 0xAB, sizeof wantc);
    CHECK("child_stats_untouched",
          memcmp(&qs, &want, sizeof qs) == 0 && memcmp(&cs, &wantc, sizeof cs) == 0,
          "a stats struct was written");
  }
  CHILD_EXPECT_CLOSED("child_set_log_callback", amqp_set_log_callback(log_cb, AMQP_LOG_DEBUG, NULL));
  CHILD_EXPECT_CLOSED("child_close_graceful", amqp_close_graceful(conn, 5000, &unsent));
  CHECK("child_close_unsent_untouched", unsent == 777, "unsent = %" PRIu64, unsent);
  /* a second close: still CLOSED (the handle was never freed in the child) */
  CHILD_EXPECT_CLOSED("child_close_graceful_again", amqp_close_graceful(conn, 5000, NULL));
  /* the pure functions keep working */
  CHECK("child_result_str", strcmp(amqp_result_str(AMQP_ERR_CLOSED), "AMQP_ERR_CLOSED") == 0,
        "amqp_result_str = %s", amqp_result_str(AMQP_ERR_CLOSED));
  {
    char small[8];
    size_t n = amqp_last_error(small, sizeof small);
    CHECK("child_last_error_snprintf", n > sizeof small && strlen(small) == sizeof small - 1,
          "n = %zu, \"%s\"", n, small);
  }
  return ra_failures == 0 ? 0 : 1;
}

/* Scenario 2: a callback forks. */
static atomic_int cb_fork_status = -1; /* the child's wait status, or -2: fork failed */
static atomic_bool cb_forked;

static amqp_disposition forking_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  if (atomic_exchange(&cb_forked, true)) return AMQP_ACK; /* once */
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    atomic_store(&cb_fork_status, -2);
    return AMQP_ACK;
  }
  if (pid == 0) {
    alarm(ra_time_scale() * 20u); /* the handler of ra_init is inherited */
    CHILD_EXPECT_CLOSED("cbchild_publish", amqp_publish(q, "x", 1));
    CHILD_EXPECT_CLOSED("cbchild_wait_connected", amqp_wait_connected(conn, 5000));
    CHILD_EXPECT_CLOSED("cbchild_consume_stop", amqp_consume_stop(q));
    CHILD_EXPECT_CLOSED("cbchild_close_graceful", amqp_close_graceful(conn, 5000, NULL));
    ra_forked_child_exit(ra_failures == 0 ? 0 : 1);
  }
  int st = 0;
  uint64_t t0 = ra_now_ms();
  pid_t r;
  while ((r = waitpid(pid, &st, WNOHANG)) == 0 && ra_now_ms() - t0 < ra_scaled_ms(CHILD_BOUND_MS))
    ra_sleep_ms(10);
  if (r == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  }
  atomic_store(&cb_fork_status, st);
  return AMQP_ACK;
}

/* Waits for a child; true when it exited with status 0 in time. */
static bool wait_child(const char *name, pid_t pid) {
  int st = 0;
  uint64_t t0 = ra_now_ms();
  pid_t r;
  while ((r = waitpid(pid, &st, WNOHANG)) == 0 && ra_now_ms() - t0 < ra_scaled_ms(CHILD_BOUND_MS))
    ra_sleep_ms(10);
  uint64_t dt = ra_now_ms() - t0;
  if (r == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    ra_fail(name, "child still running after %" PRIu64 " ms (hang); killed", dt);
    return false;
  }
  if (WIFSIGNALED(st)) {
    ra_fail(name, "child killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    return false;
  }
  CHECK(name, WEXITSTATUS(st) == 0, "child exit status %d (its FAIL lines are above)",
        WEXITSTATUS(st));
  ra_info("%s: child done in %" PRIu64 " ms", name, dt);
  return WEXITSTATUS(st) == 0;
}

/* Scenario 3, in a fresh image: argv = {prog, "exec-child", queue}. */
static int exec_child_main(const char *queue) {
  amqp_connection_handle c = 0;
  amqp_queue_handle eq = 0;
  uint64_t unsent = 1;
  ra_prog_name = "fork_after_use(exec child)";
  if (amqp_connect(uri, NULL, &c) != AMQP_OK) return 10;
  if (amqp_wait_connected(c, (uint32_t)ra_scaled_ms(15000)) != AMQP_OK) return 11;
  if (amqp_queue_open(c, queue, NULL, NULL, "durable=false", &eq) != AMQP_OK) return 12;
  for (int i = 0; i < 10; i++)
    if (amqp_publish(eq, "exec-child", 10) != AMQP_OK) return 13;
  if (amqp_close_graceful(c, (uint32_t)ra_scaled_ms(10000), &unsent) != AMQP_OK) return 14;
  if (unsent != 0) return 15;
  return 0;
}

int main(int argc, char **argv) {
  ra_init("fork_after_use", 120);
  uri = ra_broker_uri();
  if (argc == 3 && strcmp(argv[1], "exec-child") == 0) return exec_child_main(argv[2]);

  ra_unique_name(qname, sizeof qname, "ra-fork-after");
  if (!CHECK_RC("connect", amqp_connect(uri, "reconnect_delay_ms=10", &conn), AMQP_OK) ||
      !CHECK_RC("wait_connected", amqp_wait_connected(conn, 15000), AMQP_OK) ||
      !CHECK_RC("queue_open", amqp_queue_open(conn, qname, NULL, NULL, "durable=false", &q), AMQP_OK) ||
      !CHECK_RC("consume", amqp_consume(q, count_cb, NULL, 2), AMQP_OK))
    return ra_finish();

  pthread_t th;
  pthread_create(&th, NULL, hammer, NULL);
  RA_WAIT_UNTIL(atomic_load(&received) >= 20, 10000);
  CHECK("busy_before_fork", atomic_load(&received) >= 20, "only %u delivered",
        atomic_load(&received));

  /* 1. fork from the main thread while everything runs */
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    ra_fail("fork", "%s", strerror(errno));
    return ra_finish();
  }
  if (pid == 0) {
    alarm(ra_time_scale() * 20u);
    ra_forked_child_exit(child_calls_everything());
  }
  wait_child("child_from_main_thread", pid);

  /* 2. fork from inside a consume callback */
  {
    amqp_queue_handle fq = 0;
    char fname[128];
    ra_unique_name(fname, sizeof fname, "ra-fork-cb");
    if (CHECK_RC("queue_open_fork_cb", amqp_queue_open(conn, fname, NULL, NULL, "durable=false", &fq),
                 AMQP_OK)) {
      amqp_consume(fq, forking_cb, NULL, 1);
      amqp_publish(fq, "fork!", 5);
      RA_WAIT_UNTIL(atomic_load(&cb_fork_status) != -1, CHILD_BOUND_MS + 10000);
      int st = atomic_load(&cb_fork_status);
      CHECK("child_from_callback", st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
            "wait status %d (-1: the callback never finished, -2: fork failed)", st);
    }
    ra_delete_queue(fname);
  }

  /* 3. fork + exec: a fresh image uses the library normally */
  {
    char ename[128];
    ra_unique_name(ename, sizeof ename, "ra-fork-exec");
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
      char *args[] = {argv[0], (char *)"exec-child", ename, NULL};
      /* argv[0], not /proc/self/exe: under valgrind that is valgrind's tool */
      execvp(argv[0], args);
      ra_forked_child_exit(127);
    }
    if (pid > 0) {
      int st = 0;
      uint64_t t0 = ra_now_ms();
      pid_t r;
      while ((r = waitpid(pid, &st, WNOHANG)) == 0 && ra_now_ms() - t0 < ra_scaled_ms(30000))
        ra_sleep_ms(10);
      if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
      }
      CHECK("exec_child_uses_library", r != 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
            "%s status %d (10-15: which step failed in exec_child_main)",
            r == 0 ? "hung," : WIFEXITED(st) ? "exit" : "signal",
            r == 0 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    } else {
      ra_fail("exec_child_uses_library", "fork: %s", strerror(errno));
    }
    ra_delete_queue(ename);
  }

  /* The parent: everything still works. */
  atomic_store(&hammer_stop, true);
  pthread_join(th, NULL);
  for (int i = 0; i < AFTER; i++) {
    char body[32];
    int len = snprintf(body, sizeof body, "after-%d", i);
    if (amqp_publish(q, body, (size_t)len) != AMQP_OK) {
      ra_fail("parent_publish_after_fork", "message %d: %s", i, ra_last_error_str());
      break;
    }
  }
  RA_WAIT_UNTIL(atomic_load(&received_after) >= AFTER, 15000);
  CHECK("parent_roundtrip_after_fork", atomic_load(&received_after) == AFTER,
        "%u of %d delivered", atomic_load(&received_after), AFTER);
  {
    amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
    memset(&cs, 0, sizeof cs);
    cs.size = sizeof cs;
    CHECK("parent_still_connected",
          amqp_connection_get_stats(conn, &cs) == AMQP_OK && cs.state == AMQP_STATE_CONNECTED &&
              cs.connects == 1,
          "state %s, connects %" PRIu64, amqp_connection_state_str(cs.state), cs.connects);
  }
  ra_info("hammer thread published %u messages around the forks", atomic_load(&hammered));
  {
    uint64_t unsent = 99;
    CHECK_RC("parent_close_graceful", amqp_close_graceful(conn, 15000, &unsent), AMQP_OK);
    CHECK("parent_close_unsent_0", unsent == 0, "unsent = %" PRIu64, unsent);
  }
  ra_delete_queue(qname);
  return ra_finish();
}
