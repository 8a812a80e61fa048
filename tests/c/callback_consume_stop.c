/* amqp_consume_stop / amqp_consume_start.
 *
 * 1. From inside a callback (repeat 1): the call returns promptly (it does
 *    not wait for itself), and no further callback starts until
 *    amqp_consume_start; then the rest arrives, nothing lost.
 * 2. From the main thread while slow callbacks run (repeat 4), several
 *    times: when amqp_consume_stop returns no callback is running and none
 *    starts; prefetched deliveries go back (stats.released).
 * 3. Several callbacks of one queue calling amqp_consume_stop at the same
 *    time (repeat 4): no deadlock.
 *
 * Bounded by alarm(). Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define MAXMSG 400

struct tracker {
  atomic_uint counts[MAXMSG];
  atomic_uint calls;
  atomic_int in_cb;
  atomic_uint bad;
};

static unsigned distinct(struct tracker *t, int n) {
  unsigned d = 0;
  for (int i = 0; i < n; i++) d += atomic_load(&t->counts[i]) > 0;
  return d;
}

static void record(struct tracker *t, const amqp_delivery *d) {
  char tmp[32];
  unsigned seq;
  size_t len = d->body_len < sizeof tmp - 1 ? d->body_len : sizeof tmp - 1;
  if (len > 0) memcpy(tmp, d->body, len);
  tmp[len] = '\0';
  if (sscanf(tmp, "m-%u", &seq) == 1 && seq < MAXMSG)
    atomic_fetch_add(&t->counts[seq], 1);
  else
    atomic_fetch_add(&t->bad, 1);
}

static bool publish_n(amqp_queue_handle q, int n) {
  for (int i = 0; i < n; i++) {
    char body[32];
    int len = snprintf(body, sizeof body, "m-%d", i);
    if (amqp_publish(q, body, (size_t)len) != AMQP_OK) return false;
  }
  return true;
}

/* ---- part 1: stop from inside the callback ---- */
static struct tracker t1;
static amqp_queue_handle q1;
static atomic_int stop1_rc = -1;
static atomic_uint stop1_ms;
static atomic_uint calls_at_stop;

static amqp_disposition cb1(const amqp_delivery *d, void *ud) {
  (void)ud;
  record(&t1, d);
  unsigned n = atomic_fetch_add(&t1.calls, 1) + 1;
  if (n == 5) {
    uint64_t t0 = ra_now_ms();
    amqp_result rc = amqp_consume_stop(q1);
    atomic_store(&stop1_ms, (unsigned)(ra_now_ms() - t0));
    atomic_store(&calls_at_stop, atomic_load(&t1.calls));
    atomic_store(&stop1_rc, (int)rc);
  }
  return AMQP_ACK;
}

/* ---- part 2: stop from outside while callbacks run ---- */
static struct tracker t2;
static atomic_int max_in_cb2;

static amqp_disposition cb2(const amqp_delivery *d, void *ud) {
  (void)ud;
  int now = atomic_fetch_add(&t2.in_cb, 1) + 1;
  int prev = atomic_load(&max_in_cb2);
  while (now > prev && !atomic_compare_exchange_weak(&max_in_cb2, &prev, now)) {
  }
  record(&t2, d);
  ra_sleep_ms(15);
  atomic_fetch_add(&t2.calls, 1);
  atomic_fetch_sub(&t2.in_cb, 1);
  return AMQP_ACK;
}

/* ---- part 3: concurrent stops from inside callbacks ---- */
static struct tracker t3;
static amqp_queue_handle q3;
static atomic_uint stops3_done, stops3_failed;

static amqp_disposition cb3(const amqp_delivery *d, void *ud) {
  (void)ud;
  atomic_fetch_add(&t3.in_cb, 1);
  record(&t3, d);
  unsigned n = atomic_fetch_add(&t3.calls, 1) + 1;
  if (n >= 20) {
    ra_sleep_ms(5); /* widen the window where several callbacks stop at once */
    if (amqp_consume_stop(q3) != AMQP_OK) atomic_fetch_add(&stops3_failed, 1);
    atomic_fetch_add(&stops3_done, 1);
  } else {
    ra_sleep_ms(2);
  }
  atomic_fetch_sub(&t3.in_cb, 1);
  return AMQP_ACK;
}

int main(void) {
  const char *uri;
  amqp_connection_handle conn = 0;
  amqp_queue_handle q2 = 0;
  char n1[128], n2[128], n3[128];

  ra_init("callback_consume_stop", 90);
  uri = ra_broker_uri();
  if (!CHECK_RC("connect", amqp_connect(uri, NULL, &conn), AMQP_OK)) return ra_finish();
  if (!CHECK_RC("wait_connected", amqp_wait_connected(conn, 15000), AMQP_OK)) return ra_finish();
  ra_unique_name(n1, sizeof n1, "ra-stop-1");
  ra_unique_name(n2, sizeof n2, "ra-stop-2");
  ra_unique_name(n3, sizeof n3, "ra-stop-3");
  if (!CHECK_RC("queue_open_1", amqp_queue_open(conn, n1, NULL, NULL, "durable=false", &q1), AMQP_OK) ||
      !CHECK_RC("queue_open_2", amqp_queue_open(conn, n2, NULL, NULL, "durable=false", &q2), AMQP_OK) ||
      !CHECK_RC("queue_open_3", amqp_queue_open(conn, n3, NULL, NULL, "durable=false", &q3), AMQP_OK))
    return ra_finish();

  /* ---- part 1 ---- */
  {
    const int n = 50;
    CHECK("publish_1", publish_n(q1, n), "publish failed: %s", ra_last_error_str());
    CHECK_RC("consume_1", amqp_consume(q1, cb1, NULL, 1), AMQP_OK);
    RA_WAIT_UNTIL(atomic_load(&stop1_rc) != -1, 20000);
    CHECK("stop_in_callback_returns_ok", atomic_load(&stop1_rc) == AMQP_OK, "rc=%d",
          atomic_load(&stop1_rc));
    CHECK("stop_in_callback_does_not_wait_for_itself", atomic_load(&stop1_ms) < 2000,
          "took %u ms", atomic_load(&stop1_ms));
    ra_sleep_ms(1500);
    CHECK("no_callback_after_stop_in_callback", atomic_load(&t1.calls) == 5,
          "%u callbacks, want 5 (stopped in the 5th)", atomic_load(&t1.calls));
    CHECK_RC("consume_start_1", amqp_consume_start(q1), AMQP_OK);
    RA_WAIT_UNTIL(distinct(&t1, n) == (unsigned)n, 20000);
    ra_sleep_ms(300);
    CHECK("all_delivered_after_start_1", distinct(&t1, n) == (unsigned)n, "%u of %d",
          distinct(&t1, n), n);
    /* The 5th delivery's ack may race with the stop; nothing else repeats. */
    CHECK("at_most_one_repeat_1", atomic_load(&t1.calls) <= (unsigned)n + 1, "%u callbacks for %d",
          atomic_load(&t1.calls), n);
  }

  /* ---- part 2 ---- */
  {
    const int n = 300;
    bool quiet_ok = true, idle_ok = true;
    char why[200] = "";
    CHECK("publish_2", publish_n(q2, n), "publish failed: %s", ra_last_error_str());
    CHECK_RC("consume_2", amqp_consume(q2, cb2, NULL, 4), AMQP_OK);
    for (int cycle = 0; cycle < 4; cycle++) {
      RA_WAIT_UNTIL(atomic_load(&t2.in_cb) > 0 || distinct(&t2, n) == (unsigned)n, 10000);
      ra_sleep_ms(60);
      amqp_result rc = amqp_consume_stop(q2);
      int running = atomic_load(&t2.in_cb);
      unsigned calls = atomic_load(&t2.calls);
      if (rc != AMQP_OK) {
        ra_fail("consume_stop_2", "cycle %d: %s", cycle, amqp_result_str(rc));
        break;
      }
      if (running != 0 && idle_ok) {
        idle_ok = false;
        snprintf(why, sizeof why, "cycle %d: %d callbacks still running after stop returned", cycle,
                 running);
      }
      ra_sleep_ms(400);
      if (atomic_load(&t2.calls) != calls || atomic_load(&t2.in_cb) != 0) {
        quiet_ok = false;
        snprintf(why, sizeof why, "cycle %d: %u callbacks finished after stop (in_cb %d)", cycle,
                 atomic_load(&t2.calls) - calls, atomic_load(&t2.in_cb));
      }
      if (cycle == 0) {
        CHECK_RC("consume_stop_twice_ok", amqp_consume_stop(q2), AMQP_OK);
      }
      CHECK_RC("consume_start_2", amqp_consume_start(q2), AMQP_OK);
      if (cycle == 0) {
        CHECK_RC("consume_start_twice_ok", amqp_consume_start(q2), AMQP_OK);
      }
    }
    CHECK("stop_waits_for_running_callbacks", idle_ok, "%s", why);
    CHECK("no_callback_starts_after_stop", quiet_ok, "%s", why);
    RA_WAIT_UNTIL(distinct(&t2, n) == (unsigned)n, 30000);
    /* let the last callbacks finish (they sleep after recording) */
    RA_WAIT_UNTIL(atomic_load(&t2.in_cb) == 0, 5000);
    ra_sleep_ms(100);
    CHECK("all_delivered_after_cycles", distinct(&t2, n) == (unsigned)n, "%u of %d",
          distinct(&t2, n), n);
    CHECK("concurrency_at_most_4", atomic_load(&max_in_cb2) <= 4, "%d at once",
          atomic_load(&max_in_cb2));
    {
      amqp_queue_stats st = {.size = sizeof(amqp_queue_stats)};
      memset(&st, 0, sizeof st);
      st.size = sizeof st;
      amqp_queue_get_stats(q2, &st);
      CHECK("prefetched_released_on_stop", st.released > 0,
            "released=%" PRIu64 " after 4 stops with up to 400 prefetched", st.released);
      CHECK("delivered_counts_callbacks", st.delivered == atomic_load(&t2.calls),
            "stats.delivered=%" PRIu64 ", callbacks %u", st.delivered, atomic_load(&t2.calls));
      ra_info("part 2: %u callbacks for %d messages, released %" PRIu64, atomic_load(&t2.calls),
              n, st.released);
    }
  }

  /* ---- part 3 ---- */
  {
    const int n = 200;
    CHECK("publish_3", publish_n(q3, n), "publish failed: %s", ra_last_error_str());
    CHECK_RC("consume_3", amqp_consume(q3, cb3, NULL, 4), AMQP_OK);
    RA_WAIT_UNTIL(atomic_load(&stops3_done) >= 1, 20000);
    ra_sleep_ms(1000);
    unsigned calls = atomic_load(&t3.calls);
    ra_sleep_ms(500);
    CHECK("concurrent_stops_in_callbacks_return", atomic_load(&stops3_done) >= 1 &&
              atomic_load(&stops3_failed) == 0 && atomic_load(&t3.in_cb) == 0,
          "stops done %u, failed %u, callbacks still inside %d", atomic_load(&stops3_done),
          atomic_load(&stops3_failed), atomic_load(&t3.in_cb));
    CHECK("stopped_after_concurrent_stops", atomic_load(&t3.calls) == calls && calls < (unsigned)n,
          "calls went %u -> %u", calls, atomic_load(&t3.calls));
  }

  {
    uint64_t unsent = 99;
    CHECK_RC("close_graceful", amqp_close_graceful(conn, 10000, &unsent), AMQP_OK);
    CHECK("close_graceful_unsent_0", unsent == 0, "unsent=%" PRIu64, unsent);
  }
  ra_delete_queue(n1);
  ra_delete_queue(n2);
  ra_delete_queue(n3);
  return ra_finish();
}
