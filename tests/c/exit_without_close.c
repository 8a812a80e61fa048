/* A program that ends without amqp_close_graceful must exit promptly, with
 * its own exit status, whatever the library's threads are doing.
 *
 * The parent never calls the library; it forks one child per scenario, waits
 * at most EXIT_BOUND_MS for it and kills it if it hangs.
 *
 * Needs RESILIENT_AMQP_TEST_URI (the broker scenarios).
 */
#include "ra_test.h"

#define EXIT_BOUND_MS 10000

static const char *broker_uri;
static amqp_queue_handle child_q;

static amqp_disposition slow_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  ra_sleep_ms(50);
  return AMQP_ACK;
}

static amqp_disposition exit_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  exit(5); /* the whole process ends from a library thread */
}

static amqp_disposition republish_cb(const amqp_delivery *d, void *ud) {
  (void)ud;
  amqp_publish(child_q, d->body, d->body_len);
  return AMQP_ACK;
}

static void *publisher_thread(void *p) {
  (void)p;
  for (;;) {
    if (amqp_publish(child_q, "busy", 4) == AMQP_ERR_BUFFER_FULL) ra_sleep_ms(1);
  }
  return NULL;
}

static void open_queue(amqp_connection_handle *c, const char *uri, bool wait) {
  char name[128];
  ra_unique_name(name, sizeof name, "ra-exit");
  if (amqp_connect(uri, "reconnect_delay_ms=10&reconnect_delay_max_ms=50", c) != AMQP_OK) _exit(90);
  if (wait && amqp_wait_connected(*c, 15000) != AMQP_OK) _exit(91);
  if (amqp_queue_open(*c, name, NULL, NULL, "durable=false", &child_q) != AMQP_OK) _exit(92);
}

/* Each scenario runs in the child and returns the exit status it ends with
 * (via exit(), like returning from main). */
static int scenario(int which) {
  amqp_connection_handle c = 0;
  switch (which) {
    case 0: /* connected, consumers running slow callbacks, messages buffered */
      open_queue(&c, broker_uri, true);
      amqp_consume(child_q, slow_cb, NULL, 4);
      for (int i = 0; i < 1000; i++) amqp_publish(child_q, "hello", 5);
      ra_sleep_ms(300);
      return 0;
    case 1: /* broker unreachable: reconnecting in the background */
      open_queue(&c, RA_DOWN_URI, false);
      amqp_consume(child_q, slow_cb, NULL, 2);
      for (int i = 0; i < 100; i++) amqp_publish(child_q, "hello", 5);
      ra_sleep_ms(300);
      return 7;
    case 2: /* exit() called inside a callback */
      open_queue(&c, broker_uri, true);
      amqp_consume(child_q, exit_cb, NULL, 2);
      amqp_publish(child_q, "bye", 3);
      ra_sleep_ms(EXIT_BOUND_MS * 2); /* the callback ends the process first */
      return 6;
    case 3: /* another thread publishing and callbacks republishing at exit */
    {
      pthread_t t;
      open_queue(&c, broker_uri, true);
      amqp_consume(child_q, republish_cb, NULL, 4);
      for (int i = 0; i < 50; i++) amqp_publish(child_q, "loop", 4);
      pthread_create(&t, NULL, publisher_thread, NULL);
      ra_sleep_ms(500);
      return 9;
    }
    case 4: /* immediately after connect, before anything happened */
      if (amqp_connect(broker_uri, NULL, &c) != AMQP_OK) _exit(90);
      return 11;
    default:
      return 99;
  }
}

static const char *names[] = {
    "exit_connected_with_consumers",
    "exit_while_reconnecting",
    "exit_inside_callback",
    "exit_while_publishing_and_republishing",
    "exit_right_after_connect",
};
static const int want_status[] = {0, 7, 5, 9, 11};

int main(void) {
  ra_init("exit_without_close", 120);
  broker_uri = ra_broker_uri();

  for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
      ra_fail(names[i], "fork: %s", strerror(errno));
      continue;
    }
    if (pid == 0) {
      alarm(0);
      signal(SIGALRM, SIG_DFL);
      /* the child prints nothing; stdout is the parent's */
      exit(scenario(i));
    }
    uint64_t t0 = ra_now_ms();
    int status = 0;
    pid_t r = 0;
    while ((r = waitpid(pid, &status, WNOHANG)) == 0 && ra_now_ms() - t0 < EXIT_BOUND_MS)
      ra_sleep_ms(10);
    uint64_t dt = ra_now_ms() - t0;
    if (r == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      ra_fail(names[i], "still running after %d ms (hang at exit); killed", EXIT_BOUND_MS);
      continue;
    }
    if (WIFSIGNALED(status)) {
      ra_fail(names[i], "killed by signal %d (%s) after %" PRIu64 " ms", WTERMSIG(status),
              strsignal(WTERMSIG(status)), dt);
    } else if (WEXITSTATUS(status) != want_status[i]) {
      ra_fail(names[i], "exit status %d, want %d (90-92: setup failed)", WEXITSTATUS(status),
              want_status[i]);
    } else {
      ra_pass(names[i]);
      ra_info("%s: exited in %" PRIu64 " ms", names[i], dt);
    }
  }
  return ra_finish();
}
