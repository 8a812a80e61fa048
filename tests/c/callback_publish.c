/* amqp_publish from inside a consume callback, both to the queue being
 * consumed and to another queue, with several callbacks at once. Bounded by
 * alarm(): a deadlock fails the test instead of hanging it.
 *
 * Each seed "hop-<seq>-0" on queue A is republished to A as hop 1, 2, 3; at
 * hop 3 the callback publishes "done-<seq>" to queue B.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define SEEDS 300
#define HOPS 3

static amqp_queue_handle qa, qb;
static atomic_uint a_calls, publish_failures, bad_bodies;
static atomic_uint done_counts[SEEDS];
static atomic_uint b_calls;
static char first_failure[200];

static amqp_disposition cb_a(const amqp_delivery *d, void *ud) {
  unsigned seq, hop;
  char tmp[40], out[40];
  size_t len = d->body_len < sizeof tmp - 1 ? d->body_len : sizeof tmp - 1;
  (void)ud;
  atomic_fetch_add(&a_calls, 1);
  if (len > 0) memcpy(tmp, d->body, len);
  tmp[len] = '\0';
  if (sscanf(tmp, "hop-%u-%u", &seq, &hop) != 2 || seq >= SEEDS || hop > HOPS) {
    atomic_fetch_add(&bad_bodies, 1);
    return AMQP_REJECT;
  }
  amqp_result rc;
  int n;
  if (hop < HOPS) {
    n = snprintf(out, sizeof out, "hop-%u-%u", seq, hop + 1);
    rc = amqp_publish(qa, out, (size_t)n); /* the queue we are consuming */
  } else {
    n = snprintf(out, sizeof out, "done-%u", seq);
    rc = amqp_publish(qb, out, (size_t)n); /* another queue */
  }
  if (rc != AMQP_OK && atomic_fetch_add(&publish_failures, 1) == 0)
    snprintf(first_failure, sizeof first_failure, "%.40s: %.150s", amqp_result_str(rc),
             ra_last_error_str());
  return AMQP_ACK;
}

static amqp_disposition cb_b(const amqp_delivery *d, void *ud) {
  unsigned seq;
  char tmp[40];
  size_t len = d->body_len < sizeof tmp - 1 ? d->body_len : sizeof tmp - 1;
  (void)ud;
  if (len > 0) memcpy(tmp, d->body, len);
  tmp[len] = '\0';
  if (sscanf(tmp, "done-%u", &seq) == 1 && seq < SEEDS)
    atomic_fetch_add(&done_counts[seq], 1);
  else
    atomic_fetch_add(&bad_bodies, 1);
  atomic_fetch_add(&b_calls, 1);
  return AMQP_ACK;
}

static unsigned distinct_done(void) {
  unsigned n = 0;
  for (int i = 0; i < SEEDS; i++) n += atomic_load(&done_counts[i]) > 0;
  return n;
}

int main(void) {
  const char *uri;
  amqp_connection_handle conn = 0;
  char na[128], nb[128];

  ra_init("callback_publish", 60);
  uri = ra_broker_uri();
  if (!CHECK_RC("connect", amqp_connect(uri, NULL, &conn), AMQP_OK)) return ra_finish();
  if (!CHECK_RC("wait_connected", amqp_wait_connected(conn, 15000), AMQP_OK)) return ra_finish();
  ra_unique_name(na, sizeof na, "ra-cbpub-a");
  ra_unique_name(nb, sizeof nb, "ra-cbpub-b");
  if (!CHECK_RC("queue_open_a", amqp_queue_open(conn, na, NULL, NULL, "durable=false", &qa), AMQP_OK) ||
      !CHECK_RC("queue_open_b", amqp_queue_open(conn, nb, NULL, NULL, "durable=false", &qb), AMQP_OK))
    return ra_finish();

  CHECK_RC("consume_a", amqp_consume(qa, cb_a, NULL, 4), AMQP_OK);
  CHECK_RC("consume_b", amqp_consume(qb, cb_b, NULL, 2), AMQP_OK);
  for (int i = 0; i < SEEDS; i++) {
    char body[40];
    int n = snprintf(body, sizeof body, "hop-%d-0", i);
    if (amqp_publish(qa, body, (size_t)n) != AMQP_OK) {
      ra_fail("publish_seeds", "seed %d: %s", i, ra_last_error_str());
      break;
    }
  }
  RA_WAIT_UNTIL(distinct_done() == SEEDS, 40000);
  ra_sleep_ms(300);
  CHECK("all_chains_completed", distinct_done() == SEEDS, "%u of %d chains reached queue B "
        "(callbacks on A: %u)", distinct_done(), SEEDS, atomic_load(&a_calls));
  CHECK("publish_in_callback_ok", atomic_load(&publish_failures) == 0, "%u failed, first: %s",
        atomic_load(&publish_failures), first_failure);
  CHECK("no_bad_bodies", atomic_load(&bad_bodies) == 0, "%u", atomic_load(&bad_bodies));
  CHECK("callbacks_on_a", atomic_load(&a_calls) == SEEDS * (HOPS + 1), "%u (want %d)",
        atomic_load(&a_calls), SEEDS * (HOPS + 1));
  CHECK("callbacks_on_b", atomic_load(&b_calls) == SEEDS, "%u (want %d)", atomic_load(&b_calls),
        SEEDS);
  {
    amqp_queue_stats st = {.size = sizeof(amqp_queue_stats)};
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    amqp_queue_get_stats(qa, &st);
    CHECK("stats_a_published", st.published == SEEDS * (HOPS + 1),
          "published=%" PRIu64 " (want %d)", st.published, SEEDS * (HOPS + 1));
  }
  {
    uint64_t unsent = 99;
    CHECK_RC("close_graceful", amqp_close_graceful(conn, 10000, &unsent), AMQP_OK);
    CHECK("close_graceful_unsent_0", unsent == 0, "unsent=%" PRIu64, unsent);
  }
  ra_delete_queue(na);
  ra_delete_queue(nb);
  return ra_finish();
}
