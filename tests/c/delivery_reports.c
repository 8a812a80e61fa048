/* Delivery reports from C: amqp_publish_tagged + amqp_set_report_callback.
 *
 * - 1000 tagged publishes: 1000 CONFIRMED reports, each tag once, in publish
 *   order, on the library's "ramqp-reports" thread (never the caller's), with
 *   report->size covering the struct and reason NULL.
 * - publish_timeout_ms with the broker unreachable (a dead port): EXPIRED
 *   reports with a reason, and the buffer empties.
 * - close with messages unsent: UNSENT reports, all before close returns.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define N 1000

struct seen {
  pthread_t main_thread;
  atomic_uint count;
  atomic_uint by_status[8];
  atomic_uint bad;
  atomic_uint on_main;
  atomic_uint wrong_thread;
  uint64_t next_tag; /* only the report thread writes it */
  char first_reason[128];
  char thread_name[32];
};

static void on_report(const amqp_delivery_report *r, void *ud) {
  struct seen *s = ud;
  char tn[32] = "";
  pthread_getname_np(pthread_self(), tn, sizeof tn);
  if (strcmp(tn, "ramqp-reports") != 0) {
    if (atomic_fetch_add(&s->wrong_thread, 1) == 0) memcpy(s->thread_name, tn, sizeof tn);
  }
  if (pthread_equal(pthread_self(), s->main_thread)) atomic_fetch_add(&s->on_main, 1);
  if (r->size < sizeof *r) atomic_fetch_add(&s->bad, 1);
  if (r->status == AMQP_REPORT_CONFIRMED) {
    if (r->reason != NULL || r->tag != s->next_tag || r->attempts != 1) atomic_fetch_add(&s->bad, 1);
    s->next_tag = r->tag + 1;
  } else if (r->reason == NULL) {
    atomic_fetch_add(&s->bad, 1);
  } else if (s->first_reason[0] == '\0') {
    snprintf(s->first_reason, sizeof s->first_reason, "%s", r->reason);
  }
  if ((unsigned)r->status < 8) atomic_fetch_add(&s->by_status[r->status], 1);
  atomic_fetch_add(&s->count, 1);
}

static bool wait_count(struct seen *s, unsigned n, unsigned ms) {
  uint64_t end = ra_now_ms() + ra_scaled_ms(ms);
  while (atomic_load(&s->count) < n && ra_now_ms() < end) ra_sleep_ms(5);
  return atomic_load(&s->count) >= n;
}

static void confirmed_reports(void) {
  static struct seen s;
  s.main_thread = pthread_self();
  s.next_tag = 1;
  amqp_connection_handle c;
  amqp_queue_handle q;
  char name[128];
  ra_unique_name(name, sizeof name, "ra-c-reports");
  CHECK_RC("connect", amqp_connect(ra_broker_uri(), NULL, &c), AMQP_OK);
  CHECK_RC("wait_connected", amqp_wait_connected(c, 10000), AMQP_OK);
  CHECK_RC("queue_open", amqp_queue_open(c, name, NULL, NULL, "durable=false", &q), AMQP_OK);
  CHECK_RC("set_report_callback", amqp_set_report_callback(q, on_report, &s), AMQP_OK);
  for (uint64_t i = 1; i <= N; i++) {
    char body[32];
    int len = snprintf(body, sizeof body, "m%" PRIu64, i);
    if (amqp_publish_tagged(q, body, (size_t)len, i) != AMQP_OK) {
      ra_fail("publish_tagged", "%s", ra_last_error_str());
      break;
    }
  }
  CHECK("every message reported", wait_count(&s, N, 20000), "%u of %d", atomic_load(&s.count), N);
  CHECK("all confirmed, in publish order", atomic_load(&s.by_status[AMQP_REPORT_CONFIRMED]) == N &&
                                                 atomic_load(&s.bad) == 0 && s.next_tag == N + 1,
        "confirmed %u bad %u next_tag %" PRIu64, atomic_load(&s.by_status[AMQP_REPORT_CONFIRMED]),
        atomic_load(&s.bad), s.next_tag);
  CHECK("on the report thread", atomic_load(&s.wrong_thread) == 0 && atomic_load(&s.on_main) == 0,
        "wrong thread %u ('%s'), main %u", atomic_load(&s.wrong_thread), s.thread_name,
        atomic_load(&s.on_main));
  uint64_t unsent = 99;
  CHECK_RC("close", amqp_close_graceful(c, 5000, &unsent), AMQP_OK);
  CHECK("no report after close", atomic_load(&s.count) == N, "%u", atomic_load(&s.count));
}

static void expired_and_unsent(void) {
  static struct seen s;
  s.main_thread = pthread_self();
  amqp_connection_handle c;
  amqp_queue_handle q, q2;
  CHECK_RC("connect (dead port)", amqp_connect(RA_DOWN_URI, NULL, &c), AMQP_OK);
  CHECK_RC("queue_open (expiring)",
           amqp_queue_open(c, "ra-c-expire", NULL, NULL, "publish_timeout_ms=200", &q), AMQP_OK);
  CHECK_RC("queue_open (unsent)", amqp_queue_open(c, "ra-c-unsent", NULL, NULL, NULL, &q2), AMQP_OK);
  CHECK_RC("set_report_callback", amqp_set_report_callback(q, on_report, &s), AMQP_OK);
  CHECK_RC("set_report_callback 2", amqp_set_report_callback(q2, on_report, &s), AMQP_OK);
  for (uint64_t i = 0; i < 10; i++) {
    CHECK_RC("publish_tagged (expiring)", amqp_publish_tagged(q, "x", 1, i), AMQP_OK);
    CHECK_RC("publish_tagged (unsent)", amqp_publish_tagged(q2, "y", 1, 100 + i), AMQP_OK);
  }
  CHECK("expired", wait_count(&s, 10, 5000) && atomic_load(&s.by_status[AMQP_REPORT_EXPIRED]) == 10,
        "%u reports", atomic_load(&s.count));
  CHECK("with a reason", strstr(s.first_reason, "publish_timeout_ms 200") != NULL, "'%s'",
        s.first_reason);
  amqp_queue_stats st = {.size = sizeof st};
  /* a message's room is freed once its report returned */
  for (uint64_t end = ra_now_ms() + ra_scaled_ms(5000); ra_now_ms() < end; ra_sleep_ms(5)) {
    if (amqp_queue_get_stats(q, &st) == AMQP_OK && st.buffered == 0) break;
  }
  CHECK_RC("stats", amqp_queue_get_stats(q, &st), AMQP_OK);
  CHECK("stats count them", st.expired == 10 && st.failed == 10 && st.buffered == 0,
        "expired %" PRIu64 " failed %" PRIu64 " buffered %" PRIu64, st.expired, st.failed, st.buffered);
  uint64_t unsent = 0;
  CHECK_RC("close (unsent)", amqp_close_graceful(c, 100, &unsent), AMQP_ERR_TIMEOUT);
  CHECK("unsent counted", unsent == 10, "%" PRIu64, unsent);
  CHECK("unsent reported before close returned",
        atomic_load(&s.by_status[AMQP_REPORT_UNSENT]) == 10 && atomic_load(&s.bad) == 0,
        "unsent %u bad %u", atomic_load(&s.by_status[AMQP_REPORT_UNSENT]), atomic_load(&s.bad));
}

int main(void) {
  ra_init("delivery_reports", 120);
  confirmed_reports();
  expired_and_unsent();
  return ra_failures == 0 ? 0 : 1;
}
