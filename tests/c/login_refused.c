/* The broker refuses the login (wrong password): the connection fails for
 * good (AMQP_STATE_FAILED, amqp_wait_connected gives AMQP_ERR_CLOSED), the
 * process goes on, publishing gives AMQP_ERR_CLOSED, close still reports
 * what was not sent, and the password appears in no error or log message.
 *
 * Also: queue_open, consume and publish right after amqp_connect, before the
 * connection is up, work once it is (declared and started on connect).
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define SECRET "Sup3rSecretPassw0rd"

static atomic_uint log_count, log_leaks;
static char leaked[300];

static void log_cb(amqp_log_level level, const char *message, void *ud) {
  (void)level;
  (void)ud;
  atomic_fetch_add(&log_count, 1);
  if (message && strstr(message, SECRET) != NULL && atomic_fetch_add(&log_leaks, 1) == 0)
    snprintf(leaked, sizeof leaked, "%.290s", message);
}

static atomic_uint early_count;
static amqp_disposition early_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  atomic_fetch_add(&early_count, 1);
  return AMQP_ACK;
}

int main(void) {
  const char *uri;
  char bad_uri[512];
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;

  ra_init("login_refused", 60);
  uri = ra_broker_uri();

  /* amqp://user:pass@rest -> amqp://guest:SECRET@rest */
  {
    const char *scheme_end = strstr(uri, "://");
    const char *at = strchr(uri, '@');
    if (scheme_end == NULL) {
      ra_fail("setup", "cannot parse %s", uri);
      return ra_finish();
    }
    const char *rest = at ? at + 1 : scheme_end + 3;
    snprintf(bad_uri, sizeof bad_uri, "%.*s://guest:%s@%s", (int)(scheme_end - uri), uri, SECRET,
             rest);
  }

  CHECK_RC("set_log_callback", amqp_set_log_callback(log_cb, AMQP_LOG_DEBUG, NULL), AMQP_OK);
  if (!CHECK_RC("connect_bad_password", amqp_connect(bad_uri, "reconnect_delay_ms=50&reconnect_delay_max_ms=200", &conn), AMQP_OK))
    return ra_finish();
  CHECK_RC("queue_open_before_failure", amqp_queue_open(conn, "ra-login-refused", NULL, NULL, "durable=false", &q), AMQP_OK);
  /* The refusal takes a millisecond or two; a slow process (sanitizers) may publish after it.
     Both outcomes are defined: buffered before the failure (then close reports it unsent), or
     refused with AMQP_ERR_CLOSED after it. The deterministic unsent-after-failure case is
     max_reconnects_gives_up_and_reports_unsent in tests/broker_errors.rs. */
  amqp_result early = amqp_publish(q, "abc", 3);
  CHECK("publish_before_failure", early == AMQP_OK || early == AMQP_ERR_CLOSED, "got %s",
        amqp_result_str(early));
  ra_info("the early publish %s", early == AMQP_OK ? "was buffered before the refusal"
                                                     : "came after the refusal (AMQP_ERR_CLOSED)");
  uint64_t want_unsent = early == AMQP_OK ? 1 : 0;
  amqp_result want_close = early == AMQP_OK ? AMQP_ERR_TIMEOUT : AMQP_OK;

  uint64_t t0 = ra_now_ms();
  amqp_result rc = amqp_wait_connected(conn, 12000);
  CHECK_RC("wait_connected_login_refused_closed", rc, AMQP_ERR_CLOSED);
  CHECK("login_refused_gives_up_quickly", ra_now_ms() - t0 < 10000, "took %" PRIu64 " ms",
        ra_now_ms() - t0);
  {
    char msg[512];
    amqp_last_error(msg, sizeof msg);
    ra_info("wait_connected error: %s", msg);
    CHECK("login_error_no_password", strstr(msg, SECRET) == NULL, "\"%s\"", msg);
    CHECK("login_error_explains", strstr(msg, "403") || strstr(msg, "ACCESS_REFUSED") ||
                                      strstr(msg, "refused") || strstr(msg, "login") ||
                                      strstr(msg, "auth"),
          "\"%s\" does not say the login was refused", msg);
  }
  {
    amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
    memset(&cs, 0, sizeof cs);
    cs.size = sizeof cs;
    amqp_connection_get_stats(conn, &cs);
    CHECK("login_refused_state_failed", cs.state == AMQP_STATE_FAILED && cs.connects == 0,
          "state=%s connects=%" PRIu64, amqp_connection_state_str(cs.state), cs.connects);
  }
  CHECK_RC("publish_after_failure_closed", amqp_publish(q, "abc", 3), AMQP_ERR_CLOSED);
  {
    uint64_t unsent = 0;
    rc = amqp_close_graceful(conn, 500, &unsent);
    CHECK("close_after_failure_reports_unsent", rc == want_close && unsent == want_unsent,
          "rc=%s unsent=%" PRIu64 " (want %s, %" PRIu64 ")", amqp_result_str(rc), unsent,
          amqp_result_str(want_close), want_unsent);
  }
  {
    amqp_connection_handle c2 = 0;
    rc = amqp_connect("amqp://guest:" SECRET "@127.0.0.1:99999/%2f", NULL, &c2);
    char msg[512];
    amqp_last_error(msg, sizeof msg);
    CHECK("bad_uri_error_no_password", rc == AMQP_ERR_INVALID_ARGUMENT && strstr(msg, SECRET) == NULL,
          "rc=%s \"%s\"", amqp_result_str(rc), msg);
  }
  ra_sleep_ms(300); /* let queued log messages arrive */
  CHECK("logs_no_password", atomic_load(&log_leaks) == 0, "%u messages with it, e.g. \"%s\"",
        atomic_load(&log_leaks), leaked);
  CHECK("logs_seen", atomic_load(&log_count) > 0, "no log message about the refused login");
  amqp_set_log_callback(NULL, AMQP_LOG_OFF, NULL);

  /* Everything set up before the connection is up. */
  {
    char name[128];
    amqp_connection_handle c = 0;
    amqp_queue_handle qe = 0;
    ra_unique_name(name, sizeof name, "ra-early");
    if (CHECK_RC("early_connect", amqp_connect(uri, NULL, &c), AMQP_OK) &&
        CHECK_RC("early_queue_open", amqp_queue_open(c, name, NULL, NULL, "durable=false", &qe), AMQP_OK) &&
        CHECK_RC("early_consume", amqp_consume(qe, early_cb, NULL, 2), AMQP_OK)) {
      int ok = 0;
      for (int i = 0; i < 100; i++) ok += amqp_publish(qe, "early", 5) == AMQP_OK;
      CHECK("early_publish", ok == 100, "%d of 100", ok);
      RA_WAIT_UNTIL(atomic_load(&early_count) >= 100, 15000);
      CHECK("early_all_delivered", atomic_load(&early_count) == 100, "%u of 100",
            atomic_load(&early_count));
      uint64_t unsent = 9;
      CHECK_RC("early_close", amqp_close_graceful(c, 5000, &unsent), AMQP_OK);
      CHECK("early_close_unsent_0", unsent == 0, "unsent=%" PRIu64, unsent);
    }
    ra_delete_queue(name);
  }
  return ra_finish();
}
