/* Logging: nothing is printed unless asked; RESILIENT_AMQP_LOG logs to stderr
 * only; amqp_set_log_callback delivers messages one at a time on the
 * library's log thread, filters by level, and stops when set to NULL.
 *
 * No broker: a connection to a closed port logs its failed attempts.
 */
#include "ra_test.h"

#include <fcntl.h>
#include <poll.h>

/* ---- child processes for the output checks (run before this process
 *      touches the library, so fork is safe) ---- */

static void child_work(void) {
  amqp_connection_handle c;
  amqp_queue_handle q;
  if (amqp_connect(RA_DOWN_URI, "reconnect_delay_ms=10&reconnect_delay_max_ms=50", &c) != AMQP_OK)
    _exit(90);
  amqp_queue_open(c, "ra-log", NULL, NULL, NULL, &q);
  amqp_publish(q, "x", 1);
  amqp_connect("not a uri", NULL, &c); /* a failing call */
  ra_sleep_ms(700);
  amqp_close_graceful(c, 100, NULL);
  fflush(stdout);
  _exit(0);
}

/* Runs child_work with RESILIENT_AMQP_LOG set to `level` (NULL: unset) and
 * returns how many bytes it wrote to stdout and stderr. */
static bool run_child(const char *level, size_t *out_bytes, size_t *err_bytes, char *err_head,
                      size_t head_cap) {
  int po[2], pe[2];
  if (pipe(po) != 0 || pipe(pe) != 0) return false;
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    alarm(0);
    dup2(po[1], STDOUT_FILENO);
    dup2(pe[1], STDERR_FILENO);
    close(po[0]);
    close(pe[0]);
    close(po[1]);
    close(pe[1]);
    if (level)
      setenv("RESILIENT_AMQP_LOG", level, 1);
    else
      unsetenv("RESILIENT_AMQP_LOG");
    child_work();
  }
  close(po[1]);
  close(pe[1]);
  *out_bytes = *err_bytes = 0;
  if (head_cap) err_head[0] = '\0';
  struct pollfd fds[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
  int open_fds = 2;
  uint64_t deadline = ra_now_ms() + 15000;
  while (open_fds > 0 && ra_now_ms() < deadline) {
    if (poll(fds, 2, 100) <= 0) continue;
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      char buf[4096];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_fds--;
        continue;
      }
      if (i == 0) {
        *out_bytes += (size_t)n;
      } else {
        size_t have = strlen(err_head);
        if (have + 1 < head_cap) {
          size_t take = (size_t)n < head_cap - 1 - have ? (size_t)n : head_cap - 1 - have;
          memcpy(err_head + have, buf, take);
          err_head[have + take] = '\0';
        }
        *err_bytes += (size_t)n;
      }
    }
  }
  for (int i = 0; i < 2; i++)
    if (fds[i].fd >= 0) close(fds[i].fd);
  /* EOF on the pipes can come just before the child is reapable. */
  int status = 0;
  pid_t r;
  uint64_t wait_deadline = ra_now_ms() + 5000;
  while ((r = waitpid(pid, &status, WNOHANG)) == 0 && ra_now_ms() < wait_deadline) ra_sleep_ms(5);
  if (r == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ---- callback checks ---- */

struct logstate {
  atomic_uint count;
  atomic_uint bad_level;
  atomic_uint too_verbose;
  atomic_uint bad_message;
  atomic_uint wrong_userdata;
  atomic_uint not_log_thread;
  atomic_int inside;
  atomic_uint overlapped;
  atomic_int max_level;
  char thread_name[32];
  char first_message[200];
  amqp_log_level limit;
};

static struct logstate ls1, ls2;
static amqp_connection_handle g_conn;
static atomic_bool call_into_library;
static atomic_uint library_calls_ok, library_calls_failed;

static void log_cb(amqp_log_level level, const char *message, void *userdata) {
  struct logstate *s = &ls1;
  if (userdata != (void *)&ls1 && userdata != (void *)&ls2) {
    atomic_fetch_add(&ls1.wrong_userdata, 1);
  } else {
    s = userdata;
  }
  if (atomic_fetch_add(&s->inside, 1) != 0) atomic_fetch_add(&s->overlapped, 1);
  if ((int)level < AMQP_LOG_ERROR || (int)level > AMQP_LOG_DEBUG) atomic_fetch_add(&s->bad_level, 1);
  if ((int)level > (int)s->limit) atomic_fetch_add(&s->too_verbose, 1);
  if ((int)level > atomic_load(&s->max_level)) atomic_store(&s->max_level, (int)level);
  if (message == NULL || message[0] == '\0' || strnlen(message, 65536) == 65536)
    atomic_fetch_add(&s->bad_message, 1);
  {
    char tn[32] = "";
    pthread_getname_np(pthread_self(), tn, sizeof tn);
    /* The library names its log thread "ramqp-log" (under Linux's 15-byte limit). */
    if (strcmp(tn, "ramqp-log") != 0) atomic_fetch_add(&s->not_log_thread, 1);
    if (atomic_load(&s->count) == 0) {
      memcpy(s->thread_name, tn, sizeof tn);
      if (message) snprintf(s->first_message, sizeof s->first_message, "%s", message);
    }
  }
  if (atomic_load(&call_into_library)) {
    amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
    if (amqp_connection_get_stats(g_conn, &cs) == AMQP_OK || amqp_wait_connected(g_conn, 0) == AMQP_ERR_INVALID_HANDLE)
      atomic_fetch_add(&library_calls_ok, 1);
    else
      atomic_fetch_add(&library_calls_failed, 1);
  }
  ra_sleep_ms(1); /* give a concurrent call a chance to overlap */
  atomic_fetch_add(&s->count, 1);
  atomic_fetch_sub(&s->inside, 1);
}

int main(void) {
  size_t out_b, err_b;
  char head[300];

  ra_init("log_callback", 60);

  /* Silence by default. */
  {
    bool ok = run_child(NULL, &out_b, &err_b, head, sizeof head);
    CHECK("silent_by_default", ok && out_b == 0 && err_b == 0,
          "child ok=%d, %zu bytes on stdout, %zu on stderr: %.200s", ok, out_b, err_b, head);
  }
  /* RESILIENT_AMQP_LOG=debug: stderr only. */
  {
    bool ok = run_child("debug", &out_b, &err_b, head, sizeof head);
    CHECK("env_debug_logs_to_stderr_only", ok && out_b == 0 && err_b > 0,
          "child ok=%d, %zu bytes on stdout, %zu on stderr", ok, out_b, err_b);
    if (err_b > 0) ra_info("stderr begins: %.120s", strtok(head, "\n"));
  }
  {
    bool ok = run_child("error", &out_b, &err_b, head, sizeof head);
    CHECK("env_error_stdout_clean", ok && out_b == 0, "child ok=%d, %zu bytes on stdout", ok,
          out_b);
  }

  /* Callback. */
  ls1.limit = AMQP_LOG_DEBUG;
  ls2.limit = AMQP_LOG_INFO;
  CHECK_RC("set_log_callback", amqp_set_log_callback(log_cb, AMQP_LOG_DEBUG, &ls1), AMQP_OK);
  amqp_connection_handle c = 0;
  amqp_queue_handle q = 0;
  CHECK_RC("connect", amqp_connect(RA_DOWN_URI, "reconnect_delay_ms=10&reconnect_delay_max_ms=30", &c),
           AMQP_OK);
  amqp_queue_open(c, "ra-log", NULL, NULL, NULL, &q);
  RA_WAIT_UNTIL(atomic_load(&ls1.count) >= 3, 5000);
  ra_sleep_ms(200);
  CHECK("callback_receives_messages", atomic_load(&ls1.count) >= 3,
        "%u messages in 5 s of failing reconnects", atomic_load(&ls1.count));
  CHECK("callback_levels_valid", atomic_load(&ls1.bad_level) == 0, "%u bad levels",
        atomic_load(&ls1.bad_level));
  CHECK("callback_messages_valid", atomic_load(&ls1.bad_message) == 0, "%u NULL/empty",
        atomic_load(&ls1.bad_message));
  CHECK("callback_userdata", atomic_load(&ls1.wrong_userdata) == 0, "%u wrong",
        atomic_load(&ls1.wrong_userdata));
  CHECK("callback_one_at_a_time", atomic_load(&ls1.overlapped) == 0, "%u overlapped",
        atomic_load(&ls1.overlapped));
  CHECK("callback_on_log_thread", atomic_load(&ls1.not_log_thread) == 0,
        "%u calls on a thread not named resilient-amqp*, e.g. \"%s\"",
        atomic_load(&ls1.not_log_thread), ls1.thread_name);
  ra_info("log thread \"%s\", first message: %s", ls1.thread_name, ls1.first_message);

  /* Switch to INFO with another userdata: DEBUG messages stop. */
  CHECK_RC("set_log_callback_info", amqp_set_log_callback(log_cb, AMQP_LOG_INFO, &ls2), AMQP_OK);
  ra_sleep_ms(300); /* messages queued before the switch */
  atomic_store(&ls2.too_verbose, 0);
  atomic_store(&ls2.count, 0);
  unsigned before1 = atomic_load(&ls1.count);
  ra_sleep_ms(700);
  CHECK("level_filter", atomic_load(&ls2.too_verbose) == 0, "%u DEBUG messages at level INFO",
        atomic_load(&ls2.too_verbose));
  CHECK("old_userdata_not_used", atomic_load(&ls1.count) == before1, "%u more for old userdata",
        atomic_load(&ls1.count) - before1);

  /* NULL turns it off. */
  CHECK_RC("set_log_callback_null", amqp_set_log_callback(NULL, AMQP_LOG_DEBUG, NULL), AMQP_OK);
  ra_sleep_ms(300);
  unsigned n1 = atomic_load(&ls1.count), n2 = atomic_load(&ls2.count);
  /* make the library log: failing calls and reconnect attempts */
  amqp_connect("not a uri", NULL, &c);
  ra_sleep_ms(700);
  CHECK("null_callback_stops_logging", atomic_load(&ls1.count) == n1 && atomic_load(&ls2.count) == n2,
        "%u more messages", atomic_load(&ls1.count) - n1 + atomic_load(&ls2.count) - n2);
  CHECK("callback_inside_after_off", atomic_load(&ls1.inside) == 0 && atomic_load(&ls2.inside) == 0,
        "a callback is still running");

  /* A log callback that calls back into the library must not deadlock
   * (alarm() bounds this). */
  g_conn = c;
  atomic_store(&call_into_library, true);
  CHECK_RC("set_log_callback_again", amqp_set_log_callback(log_cb, AMQP_LOG_DEBUG, &ls1), AMQP_OK);
  RA_WAIT_UNTIL(atomic_load(&library_calls_ok) >= 3, 5000);
  CHECK("log_callback_calls_library", atomic_load(&library_calls_ok) >= 3 &&
        atomic_load(&library_calls_failed) == 0, "ok %u failed %u",
        atomic_load(&library_calls_ok), atomic_load(&library_calls_failed));
  {
    uint64_t unsent = 5;
    /* nothing was published on c: everything is confirmed */
    CHECK_RC("close_with_logging", amqp_close_graceful(c, 200, &unsent), AMQP_OK);
    CHECK("close_unsent", unsent == 0, "unsent=%" PRIu64 " (nothing was published)", unsent);
  }
  ra_sleep_ms(200);
  CHECK_RC("set_log_callback_off", amqp_set_log_callback(NULL, AMQP_LOG_OFF, NULL), AMQP_OK);
  return ra_finish();
}
