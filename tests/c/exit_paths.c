/* The ways a program ends while the library is busy, made deterministic
 * (exit_without_close.c covers the common cases with timing; here every
 * scenario first waits until the state it names is really there):
 *
 *   - return from main while every consumer is inside a callback that never
 *     returns and messages are buffered (unconfirmed on a live connection,
 *     and waiting on a connection that cannot reach its broker);
 *   - exit() from an application thread while callbacks run and the main
 *     thread is blocked inside amqp_wait_connected;
 *   - exit() from inside a consume callback while the other consumers are
 *     stuck in theirs;
 *   - exit() from inside the log callback;
 *   - exit() while another thread waits in amqp_close_graceful.
 * (Library calls from atexit() handlers: exit_atexit.c.)
 *
 * Each scenario runs in a child forked from this process, which never calls
 * the library itself; the child must end within EXIT_BOUND_MS (scaled under
 * valgrind) with the status the scenario chose. The children print nothing.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define EXIT_BOUND_MS 10000u
#define STUCK 3 /* consumers that never return */

static const char *broker_uri;
static amqp_connection_handle conn, down_conn;
static amqp_queue_handle qa, qb, qdown;
static char na[128], nb[128];
static atomic_uint in_cb;

/* ---- callbacks ---- */

static amqp_disposition stuck_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  atomic_fetch_add(&in_cb, 1);
  for (;;) ra_sleep_ms(100);
  return AMQP_ACK;
}

/* the last consumer to enter ends the process */
static amqp_disposition stuck_or_exit_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  if (atomic_fetch_add(&in_cb, 1) + 1 == STUCK) exit(23);
  for (;;) ra_sleep_ms(100);
  return AMQP_ACK;
}

static void exit_log_cb(amqp_log_level level, const char *message, void *ud) {
  (void)level;
  (void)message;
  (void)ud;
  exit(24);
}

static void *close_down_thread(void *p) {
  (void)p;
  amqp_close_graceful(down_conn, 60000, NULL); /* the broker is unreachable: waits */
  _exit(95);                                   /* never gets here before exit() */
  return NULL;
}

static void *exit_thread(void *p) {
  (void)p;
  ra_sleep_ms(200);
  exit(22);
  return NULL;
}

/* ---- setup helpers (failures end the child with 90..99) ---- */

static void connect_live(void) {
  if (amqp_connect(broker_uri, "reconnect_delay_ms=10&reconnect_delay_max_ms=50", &conn) != AMQP_OK)
    _exit(90);
  if (amqp_wait_connected(conn, (uint32_t)ra_scaled_ms(15000)) != AMQP_OK) _exit(91);
  if (amqp_queue_open(conn, na, NULL, NULL, "durable=false", &qa) != AMQP_OK) _exit(92);
  if (amqp_queue_open(conn, nb, NULL, NULL, "durable=false", &qb) != AMQP_OK) _exit(92);
}

/* a connection that never connects, with 100 messages waiting in its buffer */
static void buffer_on_down_connection(void) {
  amqp_queue_stats st = {.size = sizeof(amqp_queue_stats)};
  if (amqp_connect(RA_DOWN_URI, "reconnect_delay_ms=10&reconnect_delay_max_ms=50", &down_conn) !=
      AMQP_OK)
    _exit(96);
  if (amqp_queue_open(down_conn, "ra-exit-down", NULL, NULL, NULL, &qdown) != AMQP_OK) _exit(96);
  for (int i = 0; i < 100; i++)
    if (amqp_publish(qdown, "waiting", 7) != AMQP_OK) _exit(96);
  if (amqp_queue_get_stats(qdown, &st) != AMQP_OK || st.buffered != 100) _exit(96);
}

/* Enough messages on B that some are still unconfirmed right after. */
static void buffer_on_live_connection(void) {
  static char body[512];
  amqp_queue_stats st = {.size = sizeof(amqp_queue_stats)};
  memset(body, 'b', sizeof body);
  for (int i = 0; i < 20000; i++) {
    amqp_result rc = amqp_publish(qb, body, sizeof body);
    if (rc != AMQP_OK && rc != AMQP_ERR_BUFFER_FULL) _exit(97);
  }
  if (amqp_queue_get_stats(qb, &st) != AMQP_OK) _exit(97);
  if (st.buffered == 0) _exit(98); /* all confirmed already: the scenario did not happen */
}

/* Starts STUCK consumers and feeds them until each is inside its callback.
 * (Messages published before a consumer is registered at the broker all go
 * to the ones already there, so keep publishing: the broker hands new ones
 * round-robin to every consumer with prefetch room.) */
static void start_stuck_consumers(amqp_consume_fn cb) {
  uint64_t deadline = ra_now_ms() + ra_scaled_ms(15000);
  if (amqp_consume(qa, cb, NULL, STUCK) != AMQP_OK) _exit(93);
  while (atomic_load(&in_cb) < STUCK && ra_now_ms() < deadline) {
    amqp_publish(qa, "stuck", 5);
    ra_sleep_ms(20);
  }
}

static void wait_all_stuck(void) {
  if (atomic_load(&in_cb) < STUCK) _exit(99);
}

/* ---- the scenarios: each returns the status main returns with ---- */

static int scenario(int which) {
  switch (which) {
    case 0: /* return from main: callbacks stuck, messages buffered */
      connect_live();
      start_stuck_consumers(stuck_cb);
      wait_all_stuck();
      buffer_on_down_connection();
      buffer_on_live_connection();
      return 21;
    case 1: /* exit() from another thread; main blocked in a library call */
      connect_live();
      start_stuck_consumers(stuck_cb);
      wait_all_stuck();
      buffer_on_down_connection();
      buffer_on_live_connection();
      {
        pthread_t t;
        pthread_create(&t, NULL, exit_thread, NULL);
      }
      amqp_wait_connected(down_conn, 60000); /* exit() comes during this */
      return 80;
    case 2: /* exit() inside a callback while the others are stuck */
      connect_live();
      buffer_on_down_connection();
      buffer_on_live_connection();
      start_stuck_consumers(stuck_or_exit_cb);
      ra_sleep_ms((unsigned)ra_scaled_ms(EXIT_BOUND_MS) * 2); /* the callback exits first */
      return 81;
    case 3: /* exit() inside the log callback */
      buffer_on_down_connection();
      if (amqp_set_log_callback(exit_log_cb, AMQP_LOG_INFO, NULL) != AMQP_OK) _exit(90);
      connect_live(); /* "connected" is logged at info */
      ra_sleep_ms((unsigned)ra_scaled_ms(EXIT_BOUND_MS) * 2);
      return 82;
    case 4: /* exit() while another thread waits in amqp_close_graceful */
    {
      pthread_t t;
      amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
      buffer_on_down_connection();
      pthread_create(&t, NULL, close_down_thread, NULL);
      /* close has begun once the state says so */
      RA_WAIT_UNTIL(amqp_connection_get_stats(down_conn, &cs) != AMQP_OK ||
                        cs.state == AMQP_STATE_CLOSED,
                    5000);
      ra_sleep_ms(100);
      exit(25);
    }
    default:
      return 100;
  }
}

static const char *names[] = {
    "return_from_main_callbacks_stuck_messages_buffered",
    "exit_from_thread_while_main_waits_and_callbacks_stuck",
    "exit_inside_callback_while_others_stuck",
    "exit_inside_log_callback",
    "exit_while_close_graceful_waits",
};
static const int want_status[] = {21, 22, 23, 24, 25};

int main(void) {
  ra_init("exit_paths", 240);
  broker_uri = ra_broker_uri();

  for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
    ra_unique_name(na, sizeof na, "ra-exitp-a");
    ra_unique_name(nb, sizeof nb, "ra-exitp-b");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      ra_fail(names[i], "fork: %s", strerror(errno));
      continue;
    }
    if (pid == 0) {
      /* the child: main returns the scenario's status (as a program would) */
      alarm(0);
      signal(SIGALRM, SIG_DFL);
      return scenario(i);
    }
    uint64_t t0 = ra_now_ms();
    uint64_t bound = ra_scaled_ms(EXIT_BOUND_MS) + 20000; /* + setup (connect, publish) */
    int status = 0;
    pid_t r = 0;
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && ra_now_ms() - t0 < bound) ra_sleep_ms(10);
    uint64_t dt = ra_now_ms() - t0;
    if (r == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ra_fail(names[i], "still running after %" PRIu64 " ms (hang at exit); killed", dt);
    } else if (WIFSIGNALED(status)) {
      ra_fail(names[i], "killed by signal %d (%s) after %" PRIu64 " ms", WTERMSIG(status),
              strsignal(WTERMSIG(status)), dt);
    } else if (WEXITSTATUS(status) != want_status[i]) {
      ra_fail(names[i],
              "exit status %d, want %d (90-99: setup failed)",
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
