/* amqp_close_graceful from inside a consume callback: no deadlock (bounded
 * by alarm()), it still waits for the publishes made just before it (also
 * from the callback) to be confirmed, frees the handles, and no callback
 * starts afterwards. Nothing is lost: a second connection finds the
 * published messages and the unacknowledged deliveries again.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define NA 40
#define NB 25

static amqp_connection_handle conn;
static amqp_queue_handle qa, qb;
static atomic_uint calls_a, calls_after_close;
static atomic_int close_rc = -1;
static atomic_bool close_done;
static atomic_uint close_ms;
static uint64_t close_unsent = 777;
static atomic_uint publish_failures;
static atomic_uint seen_a[NA];

static unsigned seq_of(const amqp_delivery *d, const char *fmt) {
  char tmp[32];
  unsigned seq = 0xFFFFFFFFu;
  size_t len = d->body_len < sizeof tmp - 1 ? d->body_len : sizeof tmp - 1;
  if (len > 0) memcpy(tmp, d->body, len);
  tmp[len] = '\0';
  if (sscanf(tmp, fmt, &seq) != 1) return 0xFFFFFFFFu;
  return seq;
}

static amqp_disposition cb_a(const amqp_delivery *d, void *ud) {
  (void)ud;
  if (atomic_load(&close_done)) atomic_fetch_add(&calls_after_close, 1);
  unsigned n = atomic_fetch_add(&calls_a, 1) + 1;
  unsigned seq = seq_of(d, "a-%u");
  if (seq < NA) atomic_fetch_add(&seen_a[seq], 1);
  if (n == 3) {
    /* publish to another queue, then close everything from here */
    for (int i = 0; i < NB; i++) {
      char body[32];
      int len = snprintf(body, sizeof body, "b-%d", i);
      if (amqp_publish(qb, body, (size_t)len) != AMQP_OK) atomic_fetch_add(&publish_failures, 1);
    }
    uint64_t t0 = ra_now_ms();
    amqp_result rc = amqp_close_graceful(conn, 15000, &close_unsent);
    atomic_store(&close_ms, (unsigned)(ra_now_ms() - t0));
    atomic_store(&close_rc, (int)rc);
    atomic_store(&close_done, true);
  } else {
    ra_sleep_ms(20);
  }
  return AMQP_ACK;
}

/* second connection: collect what is left */
static atomic_uint seen_b[NB];
static atomic_uint later_a;
static amqp_disposition cb_check_a(const amqp_delivery *d, void *ud) {
  (void)ud;
  unsigned seq = seq_of(d, "a-%u");
  if (seq < NA) atomic_fetch_add(&seen_a[seq], 1);
  atomic_fetch_add(&later_a, 1);
  return AMQP_ACK;
}
static amqp_disposition cb_check_b(const amqp_delivery *d, void *ud) {
  (void)ud;
  unsigned seq = seq_of(d, "b-%u");
  if (seq < NB) atomic_fetch_add(&seen_b[seq], 1);
  return AMQP_ACK;
}

static unsigned distinct(atomic_uint *a, int n) {
  unsigned d = 0;
  for (int i = 0; i < n; i++) d += atomic_load(&a[i]) > 0;
  return d;
}

int main(void) {
  const char *uri;
  char na[128], nb[128];

  ra_init("callback_close", 60);
  uri = ra_broker_uri();
  if (!CHECK_RC("connect", amqp_connect(uri, NULL, &conn), AMQP_OK)) return ra_finish();
  if (!CHECK_RC("wait_connected", amqp_wait_connected(conn, 15000), AMQP_OK)) return ra_finish();
  ra_unique_name(na, sizeof na, "ra-cbclose-a");
  ra_unique_name(nb, sizeof nb, "ra-cbclose-b");
  /* durable queues, persistent messages: they must outlive this connection */
  if (!CHECK_RC("queue_open_a", amqp_queue_open(conn, na, NULL, NULL, NULL, &qa), AMQP_OK) ||
      !CHECK_RC("queue_open_b", amqp_queue_open(conn, nb, NULL, NULL, NULL, &qb), AMQP_OK))
    return ra_finish();
  for (int i = 0; i < NA; i++) {
    char body[32];
    int len = snprintf(body, sizeof body, "a-%d", i);
    amqp_publish(qa, body, (size_t)len);
  }
  /* all of A confirmed before consuming, so close has only B to wait for */
  {
    amqp_queue_stats st = {.size = sizeof(amqp_queue_stats)};
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    RA_WAIT_UNTIL(amqp_queue_get_stats(qa, &st) == AMQP_OK && st.confirmed == NA, 10000);
    CHECK("a_confirmed", st.confirmed == NA, "confirmed=%" PRIu64, st.confirmed);
  }

  CHECK_RC("consume_a", amqp_consume(qa, cb_a, NULL, 2), AMQP_OK);
  RA_WAIT_UNTIL(atomic_load(&close_done), 40000);
  CHECK("close_in_callback_returned", atomic_load(&close_done), "did not return in 40 s");
  CHECK("close_in_callback_ok", atomic_load(&close_rc) == AMQP_OK, "rc=%s",
        amqp_result_str((amqp_result)atomic_load(&close_rc)));
  CHECK("close_in_callback_unsent_0", close_unsent == 0, "unsent=%" PRIu64, close_unsent);
  CHECK("publish_in_callback_before_close_ok", atomic_load(&publish_failures) == 0, "%u failed",
        atomic_load(&publish_failures));
  ra_info("close_graceful inside the callback took %u ms", atomic_load(&close_ms));

  CHECK_RC("conn_invalid_after_close", amqp_wait_connected(conn, 0), AMQP_ERR_INVALID_HANDLE);
  CHECK_RC("queue_invalid_after_close", amqp_publish(qa, "x", 1), AMQP_ERR_INVALID_HANDLE);
  CHECK_RC("consume_stop_invalid_after_close", amqp_consume_stop(qa), AMQP_ERR_INVALID_HANDLE);
  ra_sleep_ms(700);
  CHECK("no_callback_after_close", atomic_load(&calls_after_close) == 0, "%u callbacks",
        atomic_load(&calls_after_close));

  /* Nothing lost: everything of A not acked and all of B are still there. */
  {
    amqp_connection_handle c2 = 0;
    amqp_queue_handle qa2 = 0, qb2 = 0;
    if (CHECK_RC("reconnect_check", amqp_connect(uri, NULL, &c2), AMQP_OK) &&
        CHECK_RC("wait_connected_check", amqp_wait_connected(c2, 15000), AMQP_OK) &&
        CHECK_RC("queue_open_a_check", amqp_queue_open(c2, na, NULL, NULL, NULL, &qa2), AMQP_OK) &&
        CHECK_RC("queue_open_b_check", amqp_queue_open(c2, nb, NULL, NULL, NULL, &qb2), AMQP_OK)) {
      amqp_consume(qa2, cb_check_a, NULL, 1);
      amqp_consume(qb2, cb_check_b, NULL, 1);
      RA_WAIT_UNTIL(distinct(seen_a, NA) == NA && distinct(seen_b, NB) == NB, 15000);
      CHECK("nothing_lost_a", distinct(seen_a, NA) == NA, "%u of %d", distinct(seen_a, NA), NA);
      CHECK("nothing_lost_b", distinct(seen_b, NB) == NB, "%u of %d", distinct(seen_b, NB), NB);
      ra_info("first connection handled %u deliveries of A, the second %u", atomic_load(&calls_a),
              atomic_load(&later_a));
      amqp_close_graceful(c2, 5000, NULL);
    }
  }
  ra_delete_queue(na);
  ra_delete_queue(nb);
  return ra_finish();
}
