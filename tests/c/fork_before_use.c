/* fork() before the library was used: a child forked from a process that
 * never touched the library is a process like any other and uses it
 * normally -- connect, declare, publish with confirms, consume, log callback,
 * close -- even two such children at the same time. The parent can start
 * using the library afterwards; only a child forked after that is refused
 * (fork_after_use.c tests that side in depth).
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define CHILDREN 2
#define N 300
#define CHILD_BOUND_MS 30000u

static const char *uri;
static atomic_uint received;
static atomic_uint info_logs;
static atomic_bool log_on_other_thread;
static pthread_t main_thread;

static amqp_disposition count_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  atomic_fetch_add(&received, 1);
  return AMQP_ACK;
}

static void log_cb(amqp_log_level level, const char *message, void *ud) {
  (void)message;
  (void)ud;
  if (level <= AMQP_LOG_INFO) atomic_fetch_add(&info_logs, 1);
  if (!pthread_equal(pthread_self(), main_thread)) atomic_store(&log_on_other_thread, true);
}

/* In a child: the whole life of a connection. Returns the exit status. */
static int child_main(int k) {
  char name[64], qname[128];
  amqp_connection_handle c = 0;
  amqp_queue_handle q = 0;
  main_thread = pthread_self();
#define CNAME(s) (snprintf(name, sizeof name, "child%d_%s", k, s), name)
  if (!CHECK_RC(CNAME("set_log_callback"), amqp_set_log_callback(log_cb, AMQP_LOG_INFO, NULL),
                AMQP_OK) ||
      !CHECK_RC(CNAME("connect"), amqp_connect(uri, NULL, &c), AMQP_OK) ||
      !CHECK_RC(CNAME("wait_connected"), amqp_wait_connected(c, 15000), AMQP_OK))
    return 1;
  ra_unique_name(qname, sizeof qname, "ra-fork-before");
  if (!CHECK_RC(CNAME("queue_open"), amqp_queue_open(c, qname, NULL, NULL, "durable=false", &q),
                AMQP_OK) ||
      !CHECK_RC(CNAME("consume"), amqp_consume(q, count_cb, NULL, 2), AMQP_OK))
    return 1;
  unsigned failed = 0;
  for (int i = 0; i < N; i++) failed += amqp_publish(q, "child", 5) != AMQP_OK;
  CHECK(CNAME("publish"), failed == 0, "%u publishes failed", failed);
  RA_WAIT_UNTIL(atomic_load(&received) >= N, 20000);
  CHECK(CNAME("roundtrip"), atomic_load(&received) == N, "%u of %d delivered",
        atomic_load(&received), N);
  {
    amqp_queue_stats st = {.size = sizeof(amqp_queue_stats)};
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    RA_WAIT_UNTIL(amqp_queue_get_stats(q, &st) == AMQP_OK && st.confirmed == N, 5000);
    CHECK(CNAME("confirmed"), st.confirmed == N, "confirmed %" PRIu64, st.confirmed);
  }
  RA_WAIT_UNTIL(atomic_load(&info_logs) > 0, 5000);
  CHECK(CNAME("log_callback_called"), atomic_load(&info_logs) > 0 && atomic_load(&log_on_other_thread),
        "%u info messages, on another thread: %d", atomic_load(&info_logs),
        (int)atomic_load(&log_on_other_thread));
  {
    uint64_t unsent = 99;
    CHECK_RC(CNAME("close_graceful"), amqp_close_graceful(c, 15000, &unsent), AMQP_OK);
    CHECK(CNAME("close_unsent_0"), unsent == 0, "unsent %" PRIu64, unsent);
  }
  amqp_set_log_callback(NULL, AMQP_LOG_OFF, NULL);
  ra_delete_queue(qname);
#undef CNAME
  return ra_failures == 0 ? 0 : 1;
}

static bool wait_child(const char *name, pid_t pid, uint64_t bound_ms) {
  int st = 0;
  uint64_t t0 = ra_now_ms();
  pid_t r;
  while ((r = waitpid(pid, &st, WNOHANG)) == 0 && ra_now_ms() - t0 < bound_ms) ra_sleep_ms(10);
  if (r == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    ra_fail(name, "child still running after %" PRIu64 " ms (hang); killed", bound_ms);
    return false;
  }
  if (WIFSIGNALED(st)) {
    ra_fail(name, "child killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    return false;
  }
  CHECK(name, WEXITSTATUS(st) == 0, "child exit status %d (its FAIL lines are above)",
        WEXITSTATUS(st));
  return WEXITSTATUS(st) == 0;
}

int main(void) {
  pid_t pids[CHILDREN];
  ra_init("fork_before_use", 120);
  uri = ra_broker_uri();

  /* Up to here this process has not called the library at all. */
  fflush(stdout);
  for (int k = 0; k < CHILDREN; k++) {
    pids[k] = fork();
    if (pids[k] < 0) {
      ra_fail("fork", "%s", strerror(errno));
      return ra_finish();
    }
    if (pids[k] == 0) {
      alarm(ra_time_scale() * 60u); /* ra_init's handler is inherited, the alarm is not */
      exit(child_main(k + 1));
    }
  }
  for (int k = 0; k < CHILDREN; k++) {
    char name[32];
    snprintf(name, sizeof name, "child%d_exit_status", k + 1);
    wait_child(name, pids[k], ra_scaled_ms(CHILD_BOUND_MS));
  }

  /* The parent itself starts using the library now. */
  amqp_connection_handle c = 0;
  amqp_queue_handle q = 0;
  char qname[128];
  ra_unique_name(qname, sizeof qname, "ra-fork-before-parent");
  if (CHECK_RC("parent_connect", amqp_connect(uri, NULL, &c), AMQP_OK) &&
      CHECK_RC("parent_wait_connected", amqp_wait_connected(c, 15000), AMQP_OK) &&
      CHECK_RC("parent_queue_open", amqp_queue_open(c, qname, NULL, NULL, "durable=false", &q),
               AMQP_OK)) {
    CHECK_RC("parent_publish", amqp_publish(q, "parent", 6), AMQP_OK);
    /* ... and from now on a forked child is refused at once. */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      alarm(ra_time_scale() * 20u);
      amqp_result rc = amqp_publish(q, "x", 1);
      bool ok = rc == AMQP_ERR_CLOSED && strstr(ra_last_error_str(), "fork") != NULL;
      if (!ok)
        ra_fail("late_child_refused", "got %s, \"%s\"", amqp_result_str(rc), ra_last_error_str());
      ra_forked_child_exit(ok ? 0 : 1);
    }
    if (pid > 0)
      wait_child("late_child_refused", pid, ra_scaled_ms(CHILD_BOUND_MS));
    else
      ra_fail("late_child_refused", "fork: %s", strerror(errno));
    uint64_t unsent = 99;
    CHECK_RC("parent_close_graceful", amqp_close_graceful(c, 15000, &unsent), AMQP_OK);
    CHECK("parent_close_unsent_0", unsent == 0, "unsent %" PRIu64, unsent);
  }
  ra_delete_queue(qname);
  return ra_finish();
}
