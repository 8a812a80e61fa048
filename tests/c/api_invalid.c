/* Every invalid input of the contract, from C, with no broker.
 *
 * The library connects in the background, so a connection to a port where
 * nothing listens gives real connection and queue handles to test with: the
 * connection keeps reconnecting, queue_open/publish/consume succeed and buffer.
 *
 * Also: amqp_result_str, amqp_connection_state_str, out-parameters untouched
 * on error, buffer limits, handle generations and amqp_close_graceful while
 * disconnected.
 */
#include "ra_test.h"

#define SENTINEL UINT64_C(0xDEADBEEFCAFEF00D)
#define TWO_POW_53 (UINT64_C(1) << 53)

static amqp_disposition noop_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  return AMQP_ACK;
}

/* Handles that were never issued (0 is tested separately). */
static const uint64_t never_issued[] = {
    UINT64_C(0x123456789),
    (UINT64_C(1) << 53) - 1,
    UINT64_C(0xFFFFFFFFFFFFFFFF),
    UINT64_C(0x0000000100000001),
};
#define N_NEVER (sizeof never_issued / sizeof never_issued[0])

static void check_result_str(void) {
  const char *names[10];
  bool ok = true;
  for (int i = 0; i <= 9; i++) {
    names[i] = amqp_result_str((amqp_result)i);
    if (names[i] == NULL || names[i][0] == '\0') {
      ra_fail("result_str_known", "code %d gives %s", i, names[i] ? "\"\"" : "NULL");
      ok = false;
    }
  }
  if (ok) ra_pass("result_str_known");
  if (ok) {
    bool distinct = true;
    for (int i = 0; i <= 9; i++)
      for (int j = i + 1; j <= 9; j++)
        if (strcmp(names[i], names[j]) == 0) {
          ra_fail("result_str_distinct", "codes %d and %d both \"%s\"", i, j, names[i]);
          distinct = false;
        }
    if (distinct) ra_pass("result_str_distinct");
    /* The names should say which code they are. */
    CHECK("result_str_ok_names_ok", strstr(names[0], "OK") || strstr(names[0], "ok"),
          "AMQP_OK is named \"%s\"", names[0]);
    CHECK("result_str_timeout_names_timeout",
          strstr(names[AMQP_ERR_TIMEOUT], "TIMEOUT") || strstr(names[AMQP_ERR_TIMEOUT], "imeout"),
          "AMQP_ERR_TIMEOUT is named \"%s\"", names[AMQP_ERR_TIMEOUT]);
  }
  {
    const unsigned unknown[] = {10, 12345, 0x7fffffff};
    for (size_t k = 0; k < sizeof unknown / sizeof unknown[0]; k++) {
      const char *s = amqp_result_str((amqp_result)unknown[k]);
      char name[64];
      snprintf(name, sizeof name, "result_str_unknown_%u", unknown[k]);
      CHECK(name, s != NULL && s[0] != '\0' && (!ok || strcmp(s, names[0]) != 0),
            "gives %s%s%s", s ? "\"" : "", s ? s : "NULL", s ? "\"" : "");
    }
  }
  {
    const char *st[5];
    bool sok = true;
    for (int i = 0; i <= 4; i++) {
      st[i] = amqp_connection_state_str((amqp_connection_state)i);
      if (st[i] == NULL || st[i][0] == '\0') sok = false;
    }
    for (int i = 0; sok && i <= 4; i++)
      for (int j = i + 1; j <= 4; j++)
        if (strcmp(st[i], st[j]) == 0) sok = false;
    CHECK("state_str_known_distinct", sok, "a state name is NULL, empty or repeated");
    const char *u = amqp_connection_state_str((amqp_connection_state)12345);
    CHECK("state_str_unknown", u != NULL && u[0] != '\0', "unknown state gives NULL/empty");
  }
}

static void check_connect_invalid(void) {
  amqp_connection_handle c = SENTINEL;
  amqp_result rc;

  rc = amqp_connect(NULL, NULL, &c);
  CHECK_RC("connect_uri_null", rc, AMQP_ERR_INVALID_ARGUMENT);
  CHECK("connect_uri_null_out_untouched", c == SENTINEL, "out was written: %" PRIu64, c);

  CHECK_RC("connect_out_null", amqp_connect(RA_DOWN_URI, NULL, NULL), AMQP_ERR_INVALID_ARGUMENT);

  static const char *bad_uris[] = {
      "",
      "not a uri",
      "foo:bar",
      "http://guest:guest@127.0.0.1:5672/%2f",
      "amqp://guest:guest@127.0.0.1:99999/%2f",
      "amqp://guest:guest@127.0.0.1:1/%2f?heartbeat=abc",
      "amqp://gu\xff\xfest:guest@127.0.0.1:1/%2f", /* bad UTF-8 */
  };
  for (size_t i = 0; i < sizeof bad_uris / sizeof bad_uris[0]; i++) {
    char name[64];
    c = SENTINEL;
    snprintf(name, sizeof name, "connect_bad_uri_%zu", i);
    rc = amqp_connect(bad_uris[i], NULL, &c);
    if (ra_check_rc(name, rc, AMQP_ERR_INVALID_ARGUMENT)) {
      snprintf(name, sizeof name, "connect_bad_uri_%zu_out_untouched", i);
      CHECK(name, c == SENTINEL, "out was written");
      snprintf(name, sizeof name, "connect_bad_uri_%zu_has_message", i);
      CHECK(name, amqp_last_error(NULL, 0) > 0, "amqp_last_error is empty");
    }
    if (rc == AMQP_OK) amqp_close_graceful(c, 0, NULL);
  }

  static const char *bad_options[] = {
      "reconnect_delay_ms=abc",
      "reconnect_delay_ms=",
      "reconnect_delay_ms",
      "=100",
      "max_buffered=-1",
      "max_reconnects=1.5",
      "max_buffered_bytes=99999999999999999999999999",
      "reconnect_delay_max_ms=10s",
      "max_message_bytes=0x10",
      "reconnect_delay_ms=100&bogus=1",
      "\xff\xfe=1",
      "max_buffered=\xc3\x28",
  };
  for (size_t i = 0; i < sizeof bad_options / sizeof bad_options[0]; i++) {
    char name[64];
    c = SENTINEL;
    snprintf(name, sizeof name, "connect_bad_option_%zu", i);
    rc = amqp_connect(RA_DOWN_URI, bad_options[i], &c);
    if (ra_check_rc(name, rc, AMQP_ERR_INVALID_ARGUMENT)) {
      snprintf(name, sizeof name, "connect_bad_option_%zu_out_untouched", i);
      CHECK(name, c == SENTINEL, "out was written");
    }
    if (rc == AMQP_OK) amqp_close_graceful(c, 0, NULL);
  }

  /* Unknown key: amqp_last_error names it. */
  rc = amqp_connect(RA_DOWN_URI, "reconnect_delay_ms=100&colour_of_bikeshed=red", &c);
  if (ra_check_rc("connect_unknown_option_key", rc, AMQP_ERR_INVALID_ARGUMENT)) {
    const char *msg = ra_last_error_str();
    CHECK("connect_unknown_option_key_named", strstr(msg, "colour_of_bikeshed") != NULL,
          "last error \"%s\" does not name the key", msg);
  }
  /* Bad value: amqp_last_error names the key. */
  rc = amqp_connect(RA_DOWN_URI, "max_buffered=lots", &c);
  if (ra_check_rc("connect_bad_value", rc, AMQP_ERR_INVALID_ARGUMENT)) {
    const char *msg = ra_last_error_str();
    CHECK("connect_bad_value_named", strstr(msg, "max_buffered") != NULL,
          "last error \"%s\" does not name the key", msg);
  }

  /* Valid forms. */
  static const char *good_options[] = {
      "reconnect_delay_ms=100",
      "reconnect_delay_ms=100&reconnect_delay_max_ms=1000&max_reconnects=0&max_buffered=10"
      "&max_buffered_bytes=1000&max_message_bytes=100",
      "max_reconnects=3",
  };
  for (size_t i = 0; i < sizeof good_options / sizeof good_options[0]; i++) {
    char name[64];
    c = 0;
    snprintf(name, sizeof name, "connect_good_option_%zu", i);
    rc = amqp_connect(RA_DOWN_URI, good_options[i], &c);
    if (ra_check_rc(name, rc, AMQP_OK)) amqp_close_graceful(c, 0, NULL);
  }
  c = 0;
  rc = amqp_connect("amqp://guest:guest@127.0.0.1:1/%2f?heartbeat=4", NULL, &c);
  if (ra_check_rc("connect_uri_with_heartbeat", rc, AMQP_OK)) amqp_close_graceful(c, 0, NULL);
  c = 0;
  rc = amqp_connect("amqp://127.0.0.1:1", NULL, &c);
  if (ra_check_rc("connect_uri_minimal", rc, AMQP_OK)) amqp_close_graceful(c, 0, NULL);
}

static void check_bad_handles_conn_fns(const char *what, uint64_t h) {
  char name[96];
  amqp_queue_handle q = SENTINEL;
  uint64_t unsent = SENTINEL;
  amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
  amqp_connection_stats cs_before = {.size = sizeof(amqp_connection_stats)};

  snprintf(name, sizeof name, "wait_connected_%s", what);
  CHECK_RC(name, amqp_wait_connected(h, 0), AMQP_ERR_INVALID_HANDLE);

  snprintf(name, sizeof name, "queue_open_%s", what);
  CHECK_RC(name, amqp_queue_open(h, "q", NULL, NULL, NULL, &q), AMQP_ERR_INVALID_HANDLE);
  snprintf(name, sizeof name, "queue_open_%s_out_untouched", what);
  CHECK(name, q == SENTINEL, "out was written");

  snprintf(name, sizeof name, "close_graceful_%s", what);
  CHECK_RC(name, amqp_close_graceful(h, 0, &unsent), AMQP_ERR_INVALID_HANDLE);
  snprintf(name, sizeof name, "close_graceful_%s_out_untouched", what);
  CHECK(name, unsent == SENTINEL, "unsent was written");

  memset(&cs, 0xAB, sizeof cs);
  memcpy(&cs_before, &cs, sizeof cs);
  snprintf(name, sizeof name, "connection_get_stats_%s", what);
  CHECK_RC(name, amqp_connection_get_stats(h, &cs), AMQP_ERR_INVALID_HANDLE);
  snprintf(name, sizeof name, "connection_get_stats_%s_out_untouched", what);
  CHECK(name, memcmp(&cs, &cs_before, sizeof cs) == 0, "stats were written");
}

static void check_bad_handles_queue_fns(const char *what, uint64_t h) {
  char name[96];
  amqp_queue_stats qs = {.size = sizeof(amqp_queue_stats)};
  amqp_queue_stats qs_before = {.size = sizeof(amqp_queue_stats)};

  snprintf(name, sizeof name, "publish_%s", what);
  CHECK_RC(name, amqp_publish(h, "x", 1), AMQP_ERR_INVALID_HANDLE);
  snprintf(name, sizeof name, "publish_wait_%s", what);
  CHECK_RC(name, amqp_publish_wait(h, "x", 1, 10), AMQP_ERR_INVALID_HANDLE);
  snprintf(name, sizeof name, "consume_%s", what);
  CHECK_RC(name, amqp_consume(h, noop_cb, NULL, 1), AMQP_ERR_INVALID_HANDLE);
  snprintf(name, sizeof name, "consume_stop_%s", what);
  CHECK_RC(name, amqp_consume_stop(h), AMQP_ERR_INVALID_HANDLE);
  snprintf(name, sizeof name, "consume_start_%s", what);
  CHECK_RC(name, amqp_consume_start(h), AMQP_ERR_INVALID_HANDLE);

  memset(&qs, 0xCD, sizeof qs);
  memcpy(&qs_before, &qs, sizeof qs);
  snprintf(name, sizeof name, "queue_get_stats_%s", what);
  CHECK_RC(name, amqp_queue_get_stats(h, &qs), AMQP_ERR_INVALID_HANDLE);
  snprintf(name, sizeof name, "queue_get_stats_%s_out_untouched", what);
  CHECK(name, memcmp(&qs, &qs_before, sizeof qs) == 0, "stats were written");
}

static void make_name(char *buf, size_t len, char fill) {
  memset(buf, fill, len);
  buf[len] = '\0';
}

static void check_queue_open_invalid(amqp_connection_handle conn) {
  amqp_queue_handle q;
  amqp_result rc;
  char name[96];
  char n255[256], n256[257];
  char utf8_170[171], utf8_256[257];

  q = SENTINEL;
  rc = amqp_queue_open(conn, NULL, NULL, NULL, NULL, &q);
  CHECK_RC("queue_open_queue_null", rc, AMQP_ERR_INVALID_ARGUMENT);
  CHECK("queue_open_queue_null_out_untouched", q == SENTINEL, "out was written");
  CHECK_RC("queue_open_out_null", amqp_queue_open(conn, "ra-q", NULL, NULL, NULL, NULL),
           AMQP_ERR_INVALID_ARGUMENT);

  struct {
    const char *what, *queue, *exchange, *rk;
  } bad_utf8[] = {
      {"queue", "bad\xc3\x28name", NULL, NULL},
      {"queue_lone_continuation", "\x80", NULL, NULL},
      {"queue_overlong", "\xc0\xaf", NULL, NULL},
      {"queue_surrogate", "\xed\xa0\x80", NULL, NULL},
      {"exchange", "ra-q", "ex\xff\xfe", "rk"},
      {"routing_key", "ra-q", "ra-x", "rk\x80"},
  };
  for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
    q = SENTINEL;
    snprintf(name, sizeof name, "queue_open_bad_utf8_%s", bad_utf8[i].what);
    rc = amqp_queue_open(conn, bad_utf8[i].queue, bad_utf8[i].exchange, bad_utf8[i].rk, NULL, &q);
    ra_check_rc(name, rc, AMQP_ERR_INVALID_ARGUMENT);
    snprintf(name, sizeof name, "queue_open_bad_utf8_%s_out_untouched", bad_utf8[i].what);
    CHECK(name, q == SENTINEL, "out was written");
  }

  make_name(n255, 255, 'q');
  make_name(n256, 256, 'q');
  q = SENTINEL;
  CHECK_RC("queue_open_name_256_bytes", amqp_queue_open(conn, n256, NULL, NULL, NULL, &q),
           AMQP_ERR_INVALID_ARGUMENT);
  CHECK("queue_open_name_256_bytes_out_untouched", q == SENTINEL, "out was written");
  CHECK_RC("queue_open_exchange_256_bytes", amqp_queue_open(conn, "ra-q", n256, "rk", NULL, &q),
           AMQP_ERR_INVALID_ARGUMENT);
  CHECK_RC("queue_open_routing_key_256_bytes",
           amqp_queue_open(conn, "ra-q", "ra-x", n256, NULL, &q), AMQP_ERR_INVALID_ARGUMENT);
  q = 0;
  CHECK_RC("queue_open_name_255_bytes_ok", amqp_queue_open(conn, n255, NULL, NULL, NULL, &q),
           AMQP_OK);
  CHECK_RC("queue_open_exchange_and_key_255_bytes_ok",
           amqp_queue_open(conn, "ra-q-255", n255, n255, NULL, &q), AMQP_OK);

  /* The limit is in bytes, not characters: U+00E9 is 2 bytes in UTF-8. */
  utf8_170[0] = utf8_256[0] = '\0';
  for (int i = 0; i < 85; i++) strcat(utf8_170, "\xc3\xa9");
  for (int i = 0; i < 128; i++) strcat(utf8_256, "\xc3\xa9");
  CHECK_RC("queue_open_utf8_name_170_bytes_ok",
           amqp_queue_open(conn, utf8_170, NULL, NULL, NULL, &q), AMQP_OK);
  CHECK_RC("queue_open_utf8_name_256_bytes_128_chars",
           amqp_queue_open(conn, utf8_256, NULL, NULL, NULL, &q), AMQP_ERR_INVALID_ARGUMENT);

  static const char *bad_options[] = {
      "durable=maybe",    "persistent=2x", "queue_type=bogus",
      "prefetch=abc",     "prefetch=-1",   "max_buffered=x",
      "max_buffered_bytes=", "durable",    "=true",
      "prefetch=99999999999999999999999",
  };
  for (size_t i = 0; i < sizeof bad_options / sizeof bad_options[0]; i++) {
    q = SENTINEL;
    snprintf(name, sizeof name, "queue_open_bad_option_%zu", i);
    rc = amqp_queue_open(conn, "ra-q-opts", NULL, NULL, bad_options[i], &q);
    ra_check_rc(name, rc, AMQP_ERR_INVALID_ARGUMENT);
    snprintf(name, sizeof name, "queue_open_bad_option_%zu_out_untouched", i);
    CHECK(name, q == SENTINEL, "out was written");
  }
  rc = amqp_queue_open(conn, "ra-q-opts", NULL, NULL, "durable=true&flavour=vanilla", &q);
  if (ra_check_rc("queue_open_unknown_option_key", rc, AMQP_ERR_INVALID_ARGUMENT)) {
    const char *msg = ra_last_error_str();
    CHECK("queue_open_unknown_option_key_named", strstr(msg, "flavour") != NULL,
          "last error \"%s\" does not name the key", msg);
  }

  static const char *good_options[] = {
      "durable=false&persistent=false&prefetch=10&max_buffered=5&max_buffered_bytes=1000",
      "durable=true&persistent=true",
      "queue_type=quorum",
      "queue_type=classic",
      "prefetch=1",
  };
  for (size_t i = 0; i < sizeof good_options / sizeof good_options[0]; i++) {
    char qn[64];
    snprintf(qn, sizeof qn, "ra-q-good-%zu", i);
    snprintf(name, sizeof name, "queue_open_good_option_%zu", i);
    CHECK_RC(name, amqp_queue_open(conn, qn, NULL, NULL, good_options[i], &q), AMQP_OK);
  }
  CHECK_RC("queue_open_exchange_type_fanout",
           amqp_queue_open(conn, "ra-q-fan", "ra-x-fan", NULL, "exchange_type=fanout", &q),
           AMQP_OK);
  CHECK_RC("queue_open_empty_exchange_is_default",
           amqp_queue_open(conn, "ra-q-defx", "", NULL, NULL, &q), AMQP_OK);
}

static void check_publish_and_limits(void) {
  amqp_connection_handle conn = 0, conn2 = 0;
  amqp_queue_handle q = 0, q2 = 0;
  amqp_queue_stats st = {.size = sizeof(amqp_queue_stats)};
  char big[200];
  memset(big, 'b', sizeof big);

  /* Message size limit of the connection. */
  if (!CHECK_RC("limits_connect", amqp_connect(RA_DOWN_URI, "max_message_bytes=100&max_buffered=3", &conn), AMQP_OK))
    return;
  if (!CHECK_RC("limits_queue_open", amqp_queue_open(conn, "ra-limits", NULL, NULL, NULL, &q), AMQP_OK))
    return;

  CHECK_RC("publish_body_null_len_5", amqp_publish(q, NULL, 5), AMQP_ERR_INVALID_ARGUMENT);
  CHECK_RC("publish_body_null_len_0_ok", amqp_publish(q, NULL, 0), AMQP_OK);
  CHECK_RC("publish_empty_body_ok", amqp_publish(q, "", 0), AMQP_OK);
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  if (CHECK_RC("queue_get_stats_ok", amqp_queue_get_stats(q, &st), AMQP_OK)) {
    CHECK("stats_after_two_empty_publishes",
          st.published == 2 && st.buffered == 2 && st.buffered_bytes == 0 && st.confirmed == 0,
          "published=%" PRIu64 " buffered=%" PRIu64 " buffered_bytes=%" PRIu64 " confirmed=%" PRIu64,
          st.published, st.buffered, st.buffered_bytes, st.confirmed);
  }
  CHECK_RC("publish_too_large", amqp_publish(q, big, 101), AMQP_ERR_MESSAGE_TOO_LARGE);
  CHECK_RC("publish_at_max_message_bytes_ok", amqp_publish(q, big, 100), AMQP_OK);
  /* connection-level max_buffered=3 is the queue default: the 4th is refused */
  CHECK_RC("publish_buffer_full_by_count", amqp_publish(q, big, 1), AMQP_ERR_BUFFER_FULL);
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  if (CHECK_RC("queue_get_stats_ok_2", amqp_queue_get_stats(q, &st), AMQP_OK)) {
    CHECK("buffer_full_stores_nothing",
          st.published == 3 && st.buffered == 3 && st.buffered_bytes == 100,
          "published=%" PRIu64 " buffered=%" PRIu64 " buffered_bytes=%" PRIu64, st.published,
          st.buffered, st.buffered_bytes);
  }
  CHECK_RC("publish_buffer_full_again", amqp_publish(q, "", 0), AMQP_ERR_BUFFER_FULL);

  /* A queue option overrides the connection default. */
  if (CHECK_RC("limits_queue_open_override",
               amqp_queue_open(conn, "ra-limits-2", NULL, NULL, "max_buffered=5", &q2), AMQP_OK)) {
    int ok = 0;
    for (int i = 0; i < 5; i++) ok += amqp_publish(q2, "m", 1) == AMQP_OK;
    CHECK("queue_max_buffered_overrides_connection", ok == 5, "%d of 5 accepted", ok);
    CHECK_RC("queue_max_buffered_full", amqp_publish(q2, "m", 1), AMQP_ERR_BUFFER_FULL);
  }
  /* Byte limit: exactly at the limit is accepted, one byte more is refused. */
  if (CHECK_RC("limits_queue_open_bytes",
               amqp_queue_open(conn, "ra-limits-3", NULL, NULL, "max_buffered_bytes=10&max_buffered=100", &q2),
               AMQP_OK)) {
    CHECK_RC("publish_up_to_byte_limit", amqp_publish(q2, big, 10), AMQP_OK);
    CHECK_RC("publish_buffer_full_by_bytes", amqp_publish(q2, big, 1), AMQP_ERR_BUFFER_FULL);
  }

  /* Consume argument checks (works while disconnected). */
  CHECK_RC("consume_cb_null", amqp_consume(q, NULL, NULL, 1), AMQP_ERR_INVALID_ARGUMENT);
  CHECK_RC("consume_while_disconnected_ok", amqp_consume(q, noop_cb, NULL, 0), AMQP_OK);
  CHECK_RC("consume_again_adds_ok", amqp_consume(q, noop_cb, NULL, 3), AMQP_OK);
  CHECK_RC("consume_stop_ok", amqp_consume_stop(q), AMQP_OK);
  CHECK_RC("consume_start_ok", amqp_consume_start(q), AMQP_OK);

  /* Stats argument checks. */
  CHECK_RC("queue_get_stats_out_null", amqp_queue_get_stats(q, NULL), AMQP_ERR_INVALID_ARGUMENT);
  CHECK_RC("connection_get_stats_out_null", amqp_connection_get_stats(conn, NULL),
           AMQP_ERR_INVALID_ARGUMENT);
  {
    amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
    memset(&cs, 0, sizeof cs);
    cs.size = sizeof cs;
    /* wait for at least one failed attempt */
    RA_WAIT_UNTIL(amqp_connection_get_stats(conn, &cs) == AMQP_OK && cs.failed_attempts > 0, 5000);
    CHECK("connection_stats_while_down",
          (cs.state == AMQP_STATE_CONNECTING || cs.state == AMQP_STATE_RECONNECTING) &&
              cs.connects == 0 && cs.failed_attempts >= 1 && cs.consecutive_failures >= 1 &&
              cs.queues == 3,
          "state=%d connects=%" PRIu64 " failed=%" PRIu64 " consecutive=%" PRIu64
          " queues=%" PRIu64 " (want connecting/reconnecting, 0, >=1, >=1, 3)",
          (int)cs.state, cs.connects, cs.failed_attempts, cs.consecutive_failures, cs.queues);
  }

  /* Close while disconnected: times out and reports what stayed. */
  {
    uint64_t unsent = SENTINEL;
    uint64_t t0 = ra_now_ms();
    amqp_result rc = amqp_close_graceful(conn, 300, &unsent);
    uint64_t dt = ra_now_ms() - t0;
    CHECK_RC("close_graceful_down_times_out", rc, AMQP_ERR_TIMEOUT);
    /* 3 on ra-limits, 5 on ra-limits-2, 1 on ra-limits-3 */
    CHECK("close_graceful_down_unsent", unsent == 9, "unsent=%" PRIu64 " (want 9)", unsent);
    CHECK("close_graceful_down_bounded", dt >= 250 && dt < 5000, "took %" PRIu64 " ms for 300",
          dt);
    unsent = SENTINEL;
    CHECK_RC("close_graceful_twice", amqp_close_graceful(conn, 0, &unsent), AMQP_ERR_INVALID_HANDLE);
    CHECK("close_graceful_twice_unsent_untouched", unsent == SENTINEL, "unsent was written");
    CHECK_RC("publish_after_close_invalid_handle", amqp_publish(q, "x", 1), AMQP_ERR_INVALID_HANDLE);
    CHECK_RC("queue_stats_after_close_invalid_handle", amqp_queue_get_stats(q, &st),
             AMQP_ERR_INVALID_HANDLE);
    CHECK_RC("wait_connected_after_close_invalid_handle", amqp_wait_connected(conn, 0),
             AMQP_ERR_INVALID_HANDLE);
  }

  /* Close with nothing buffered: AMQP_OK and unsent 0, even while down. */
  if (CHECK_RC("empty_close_connect", amqp_connect(RA_DOWN_URI, NULL, &conn2), AMQP_OK)) {
    uint64_t unsent = SENTINEL;
    amqp_queue_open(conn2, "ra-empty", NULL, NULL, NULL, &q2);
    CHECK_RC("close_graceful_nothing_buffered_ok", amqp_close_graceful(conn2, 1000, &unsent),
             AMQP_OK);
    CHECK("close_graceful_nothing_buffered_unsent_0", unsent == 0, "unsent=%" PRIu64, unsent);
  }
  /* unsent may be NULL */
  if (CHECK_RC("close_null_unsent_connect", amqp_connect(RA_DOWN_URI, NULL, &conn2), AMQP_OK)) {
    amqp_queue_open(conn2, "ra-null-unsent", NULL, NULL, NULL, &q2);
    amqp_publish(q2, "x", 1);
    CHECK_RC("close_graceful_unsent_null", amqp_close_graceful(conn2, 50, NULL), AMQP_ERR_TIMEOUT);
  }
}

/* A close in progress refuses publishes with AMQP_ERR_CLOSED and shows
 * state CLOSED. */
struct closer_arg {
  amqp_connection_handle conn;
  amqp_result rc;
  uint64_t unsent;
};
static void *closer_thread(void *p) {
  struct closer_arg *a = p;
  a->rc = amqp_close_graceful(a->conn, 1500, &a->unsent);
  return NULL;
}
static void check_close_in_progress(void) {
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  pthread_t t;
  struct closer_arg a;
  if (!CHECK_RC("closing_connect", amqp_connect(RA_DOWN_URI, NULL, &conn), AMQP_OK)) return;
  if (!CHECK_RC("closing_queue_open", amqp_queue_open(conn, "ra-closing", NULL, NULL, NULL, &q), AMQP_OK))
    return;
  for (int i = 0; i < 7; i++) amqp_publish(q, "abc", 3);
  a.conn = conn;
  a.rc = AMQP_ERR_INTERNAL;
  a.unsent = SENTINEL;
  pthread_create(&t, NULL, closer_thread, &a);
  ra_sleep_ms(400);
  CHECK_RC("publish_while_closing_is_closed", amqp_publish(q, "abc", 3), AMQP_ERR_CLOSED);
  {
    amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
    memset(&cs, 0, sizeof cs);
    cs.size = sizeof cs;
    amqp_result rc = amqp_connection_get_stats(conn, &cs);
    CHECK("state_while_closing_is_closed", rc == AMQP_OK && cs.state == AMQP_STATE_CLOSED,
          "rc=%s state=%s while amqp_close_graceful runs in another thread",
          amqp_result_str(rc), amqp_connection_state_str(cs.state));
  }
  pthread_join(t, NULL);
  CHECK_RC("close_in_thread_times_out", a.rc, AMQP_ERR_TIMEOUT);
  CHECK("close_in_thread_unsent_7", a.unsent == 7, "unsent=%" PRIu64, a.unsent);
}

/* Handles are generation-checked: freed handles never come back. */
static void check_generations(void) {
  enum { N = 40 };
  uint64_t conns[N], queues[N];
  bool ok = true, distinct = true, below = true;
  for (int i = 0; i < N; i++) {
    conns[i] = queues[i] = 0;
    if (amqp_connect(RA_DOWN_URI, NULL, &conns[i]) != AMQP_OK ||
        amqp_queue_open(conns[i], "ra-gen", NULL, NULL, NULL, &queues[i]) != AMQP_OK) {
      ra_fail("generations_setup", "connect/queue_open %d failed: %s", i, ra_last_error_str());
      return;
    }
    if (conns[i] >= TWO_POW_53 || queues[i] >= TWO_POW_53 || conns[i] == 0 || queues[i] == 0)
      below = false;
    amqp_close_graceful(conns[i], 0, NULL);
    for (int j = 0; j <= i; j++) {
      if (amqp_wait_connected(conns[j], 0) != AMQP_ERR_INVALID_HANDLE) ok = false;
      if (amqp_publish(queues[j], "x", 1) != AMQP_ERR_INVALID_HANDLE) ok = false;
      if (j < i && (conns[j] == conns[i] || queues[j] == queues[i])) distinct = false;
    }
  }
  CHECK("handles_nonzero_below_2_53", below, "a handle was 0 or >= 2^53");
  CHECK("freed_handles_stay_invalid", ok, "a freed handle became valid again");
  CHECK("freed_handles_not_reissued", distinct, "a freed handle value was issued again");
}

static void check_failed_for_good(void) {
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  if (!CHECK_RC("failed_connect",
                amqp_connect(RA_DOWN_URI, "max_reconnects=2&reconnect_delay_ms=10&reconnect_delay_max_ms=20", &conn),
                AMQP_OK))
    return;
  amqp_queue_open(conn, "ra-failed", NULL, NULL, NULL, &q);
  CHECK_RC("publish_before_giving_up", amqp_publish(q, "abc", 3), AMQP_OK);
  uint64_t t0 = ra_now_ms();
  CHECK_RC("wait_connected_gives_closed", amqp_wait_connected(conn, 10000), AMQP_ERR_CLOSED);
  CHECK("wait_connected_gives_up_quickly", ra_now_ms() - t0 < 5000, "took %" PRIu64 " ms",
        ra_now_ms() - t0);
  {
    amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
    memset(&cs, 0, sizeof cs);
    cs.size = sizeof cs;
    amqp_result rc = amqp_connection_get_stats(conn, &cs);
    CHECK("failed_state", rc == AMQP_OK && cs.state == AMQP_STATE_FAILED && cs.connects == 0,
          "rc=%s state=%s connects=%" PRIu64, amqp_result_str(rc),
          amqp_connection_state_str(cs.state), cs.connects);
  }
  CHECK_RC("publish_after_failed_is_closed", amqp_publish(q, "abc", 3), AMQP_ERR_CLOSED);
  CHECK_RC("wait_connected_failed_again", amqp_wait_connected(conn, 0), AMQP_ERR_CLOSED);
  {
    uint64_t unsent = SENTINEL;
    amqp_result rc = amqp_close_graceful(conn, 100, &unsent);
    CHECK("close_failed_reports_unsent", rc == AMQP_ERR_TIMEOUT && unsent == 1,
          "rc=%s unsent=%" PRIu64 " (want AMQP_ERR_TIMEOUT, 1)", amqp_result_str(rc), unsent);
  }
}

int main(void) {
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  ra_init("api_invalid", 90);

  check_result_str();
  check_connect_invalid();

  if (!CHECK_RC("connect_down_broker_ok", amqp_connect(RA_DOWN_URI, "reconnect_delay_max_ms=200", &conn), AMQP_OK))
    return ra_finish();
  if (!CHECK_RC("queue_open_while_down_ok", amqp_queue_open(conn, "ra-q-main", NULL, NULL, NULL, &q), AMQP_OK))
    return ra_finish();
  CHECK("handles_nonzero", conn != 0 && q != 0, "conn=%" PRIu64 " q=%" PRIu64, conn, q);
  CHECK("handles_below_2_53", conn < TWO_POW_53 && q < TWO_POW_53, "conn=%" PRIu64 " q=%" PRIu64, conn, q);
  CHECK("conn_and_queue_handles_differ", conn != q, "both %" PRIu64, conn);
  {
    uint64_t t0 = ra_now_ms();
    CHECK_RC("wait_connected_down_times_out", amqp_wait_connected(conn, 300), AMQP_ERR_TIMEOUT);
    uint64_t dt = ra_now_ms() - t0;
    CHECK("wait_connected_timeout_respected", dt >= 250 && dt < 3000, "took %" PRIu64 " ms for 300", dt);
    t0 = ra_now_ms();
    CHECK_RC("wait_connected_zero_timeout", amqp_wait_connected(conn, 0), AMQP_ERR_TIMEOUT);
    CHECK("wait_connected_zero_is_quick", ra_now_ms() - t0 < 200, "took %" PRIu64 " ms", ra_now_ms() - t0);
  }

  check_bad_handles_conn_fns("handle_0", 0);
  check_bad_handles_queue_fns("handle_0", 0);
  for (size_t i = 0; i < N_NEVER; i++) {
    char what[48];
    snprintf(what, sizeof what, "never_issued_%zu", i);
    check_bad_handles_conn_fns(what, never_issued[i]);
    check_bad_handles_queue_fns(what, never_issued[i]);
  }
  check_bad_handles_conn_fns("queue_handle_as_conn", q);
  check_bad_handles_queue_fns("conn_handle_as_queue", conn);

  check_queue_open_invalid(conn);
  check_publish_and_limits();
  check_close_in_progress();
  check_generations();
  check_failed_for_good();

  {
    uint64_t unsent = SENTINEL;
    amqp_close_graceful(conn, 0, &unsent);
  }
  return ra_finish();
}
