/* amqp_last_error: snprintf-like copy, full length returned, NUL-terminated
 * when cap > 0, nothing written when cap == 0, empty after a success on the
 * same thread, and per thread. No broker needed. */
#include "ra_test.h"

static void fill(char *buf, size_t n) { memset(buf, 'X', n); }

static bool all_x(const char *buf, size_t from, size_t to) {
  for (size_t i = from; i < to; i++)
    if (buf[i] != 'X') return false;
  return true;
}

struct thread_result {
  size_t initial_len;
  size_t own_len;
  char own_msg[256];
  amqp_result rc;
};

static void *other_thread(void *p) {
  struct thread_result *r = p;
  amqp_connection_handle c;
  char buf[256];
  fill(buf, sizeof buf);
  /* Nothing failed on this thread yet, whatever the main thread did. */
  r->initial_len = amqp_last_error(buf, sizeof buf);
  r->rc = amqp_connect(RA_DOWN_URI, "thread_only_key=1", &c);
  r->own_len = amqp_last_error(r->own_msg, sizeof r->own_msg);
  return NULL;
}

int main(void) {
  char full[512];
  char buf[64];
  size_t n, r;
  amqp_connection_handle c = 0;
  amqp_queue_handle q = 0;
  amqp_queue_stats st = {.size = sizeof(amqp_queue_stats)};

  ra_init("last_error", 30);

  fill(buf, sizeof buf);
  r = amqp_last_error(buf, sizeof buf);
  CHECK("empty_at_start", r == 0 && buf[0] == '\0', "returned %zu, buf[0]=0x%02x", r,
        (unsigned char)buf[0]);

  /* A failure with a message long enough to truncate. */
  CHECK_RC("fail_unknown_key",
           amqp_connect(RA_DOWN_URI, "main_thread_unknown_option_key=1", &c),
           AMQP_ERR_INVALID_ARGUMENT);
  fill(full, sizeof full);
  n = amqp_last_error(full, sizeof full);
  CHECK("returns_full_length", n > 0 && n < sizeof full && strlen(full) == n,
        "returned %zu, strlen %zu", n, strnlen(full, sizeof full));
  CHECK("message_names_key", strstr(full, "main_thread_unknown_option_key") != NULL,
        "message \"%s\"", full);
  CHECK("message_is_one_line", strchr(full, '\n') == NULL, "message has a newline");
  ra_info("message: %s", full);

  r = amqp_last_error(full, sizeof full);
  CHECK("reading_does_not_clear", r == n, "second read returned %zu, first %zu", r, n);

  if (n >= 8 && n < 500) {
    fill(buf, sizeof buf);
    r = amqp_last_error(buf, 5);
    CHECK("truncated_returns_full_length", r == n, "returned %zu, want %zu", r, n);
    CHECK("truncated_prefix", memcmp(buf, full, 4) == 0, "first 4 bytes differ");
    CHECK("truncated_nul_terminated", buf[4] == '\0', "buf[4]=0x%02x", (unsigned char)buf[4]);
    CHECK("truncated_writes_nothing_beyond_cap", all_x(buf, 5, sizeof buf), "wrote past cap");

    {
      char tbuf[512];
      fill(tbuf, sizeof tbuf);
      r = amqp_last_error(tbuf, n); /* one short of room for the NUL */
      CHECK("cap_equal_len_truncates_last_char",
            r == n && memcmp(tbuf, full, n - 1) == 0 && tbuf[n - 1] == '\0' && tbuf[n] == 'X',
            "returned %zu", r);
    }

    fill(buf, sizeof buf);
    r = amqp_last_error(buf, 1);
    CHECK("cap_1_only_nul", r == n && buf[0] == '\0' && all_x(buf, 1, sizeof buf),
          "returned %zu buf[0]=0x%02x buf[1]=0x%02x", r, (unsigned char)buf[0],
          (unsigned char)buf[1]);

    fill(buf, sizeof buf);
    r = amqp_last_error(buf, 0);
    CHECK("cap_0_writes_nothing", r == n && all_x(buf, 0, sizeof buf), "returned %zu", r);

    r = amqp_last_error(NULL, 0);
    CHECK("null_buf_cap_0_returns_length", r == n, "returned %zu", r);

    {
      char exact[512];
      fill(exact, sizeof exact);
      r = amqp_last_error(exact, n + 1);
      CHECK("cap_len_plus_1_fits", r == n && strcmp(exact, full) == 0 && exact[n + 1] == 'X',
            "returned %zu", r);
    }
  }

  /* Per thread: another thread sees nothing of ours, and its own failure does
   * not replace ours. */
  {
    pthread_t t;
    struct thread_result tr;
    memset(&tr, 0, sizeof tr);
    pthread_create(&t, NULL, other_thread, &tr);
    pthread_join(t, NULL);
    CHECK("per_thread_fresh_thread_empty", tr.initial_len == 0,
          "a new thread saw %zu bytes", tr.initial_len);
    CHECK("per_thread_own_failure",
          tr.rc == AMQP_ERR_INVALID_ARGUMENT && tr.own_len > 0 &&
              strstr(tr.own_msg, "thread_only_key") != NULL,
          "rc=%s message \"%s\"", amqp_result_str(tr.rc), tr.own_msg);
    fill(full, sizeof full);
    r = amqp_last_error(full, sizeof full);
    CHECK("per_thread_main_unchanged",
          r == n && strstr(full, "main_thread_unknown_option_key") != NULL &&
              strstr(full, "thread_only_key") == NULL,
          "main now has \"%s\"", full);
  }

  /* A success on this thread clears it: connect, queue_open, publish, stats. */
  CHECK_RC("connect_ok", amqp_connect(RA_DOWN_URI, NULL, &c), AMQP_OK);
  fill(buf, sizeof buf);
  r = amqp_last_error(buf, sizeof buf);
  CHECK("empty_after_success_connect", r == 0 && buf[0] == '\0', "returned %zu: \"%.*s\"", r,
        (int)(r < 60 ? r : 60), buf);

  CHECK_RC("fail_publish_handle_0", amqp_publish(0, "x", 1), AMQP_ERR_INVALID_HANDLE);
  CHECK("message_after_invalid_handle", amqp_last_error(NULL, 0) > 0, "empty");
  CHECK_RC("queue_open_ok", amqp_queue_open(c, "ra-last-error", NULL, NULL, NULL, &q), AMQP_OK);
  CHECK("empty_after_success_queue_open", amqp_last_error(NULL, 0) == 0, "not empty");

  CHECK_RC("fail_publish_null_body", amqp_publish(q, NULL, 3), AMQP_ERR_INVALID_ARGUMENT);
  CHECK("message_after_null_body", amqp_last_error(NULL, 0) > 0, "empty");
  CHECK_RC("publish_ok", amqp_publish(q, "x", 1), AMQP_OK);
  CHECK("empty_after_success_publish", amqp_last_error(NULL, 0) == 0, "not empty");

  CHECK_RC("fail_stats_null", amqp_queue_get_stats(q, NULL), AMQP_ERR_INVALID_ARGUMENT);
  CHECK_RC("stats_ok", amqp_queue_get_stats(q, &st), AMQP_OK);
  CHECK("empty_after_success_stats", amqp_last_error(NULL, 0) == 0, "not empty");

  /* A timeout is a failed call too and says so. */
  CHECK_RC("wait_connected_timeout", amqp_wait_connected(c, 10), AMQP_ERR_TIMEOUT);
  CHECK("message_after_timeout", amqp_last_error(NULL, 0) > 0, "empty");

  CHECK_RC("close", amqp_close_graceful(c, 0, NULL), AMQP_ERR_TIMEOUT);
  CHECK_RC("close_again", amqp_close_graceful(c, 0, NULL), AMQP_ERR_INVALID_HANDLE);
  CHECK("message_after_close_again", amqp_last_error(NULL, 0) > 0, "empty");

  return ra_finish();
}
