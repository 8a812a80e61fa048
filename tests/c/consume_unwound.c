/* A callback whose thread its runtime ends inside it (pthread_exit: what
 * Python's finalization does to every thread that asks for the GIL). No
 * callback of that consumer set starts again, on any of its `repeat`
 * threads: each would be ended the same way, and at Python's exit one that
 * starts after finalization crashes the interpreter. The set's deliveries go
 * back to the broker and another set takes them all; the ended set's release
 * does not run; close does not wait for the ended callback.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define MESSAGES 200u

struct set_state {
  atomic_uint started, acked, released;
  /* Set just before the first callback ends its thread (0: not yet). */
  atomic_uint_fast64_t unwound_at_ms;
  /* Callbacks of the set started more than 50 ms after that. */
  atomic_uint started_after_unwind;
};

static struct set_state a, b;

static amqp_disposition cb_a(const amqp_delivery *d, void *ud) {
  struct set_state *s = ud;
  (void)d;
  uint64_t unwound = atomic_load(&s->unwound_at_ms);
  if (unwound != 0 && ra_now_ms() > unwound + 50) atomic_fetch_add(&s->started_after_unwind, 1);
  if (atomic_fetch_add(&s->started, 1) == 0) {
    ra_sleep_ms(100); /* the set's other threads run meanwhile */
    atomic_store(&s->unwound_at_ms, ra_now_ms());
    pthread_exit(NULL);
  }
  ra_sleep_ms(5);
  atomic_fetch_add(&s->acked, 1);
  return AMQP_ACK;
}

static amqp_disposition cb_b(const amqp_delivery *d, void *ud) {
  struct set_state *s = ud;
  (void)d;
  atomic_fetch_add(&s->started, 1);
  ra_sleep_ms(1);
  atomic_fetch_add(&s->acked, 1);
  return AMQP_ACK;
}

static void release(void *ud) {
  struct set_state *s = ud;
  atomic_fetch_add(&s->released, 1);
}

int main(void) {
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  uint64_t ida = 0, idb = 0;
  char name[128];

  ra_init("consume_unwound", 90);
  if (!CHECK_RC("connect", amqp_connect(ra_broker_uri(), NULL, &conn), AMQP_OK)) return ra_finish();
  CHECK_RC("wait_connected", amqp_wait_connected(conn, 15000), AMQP_OK);
  ra_unique_name(name, sizeof name, "ra-c-unwound");
  if (!CHECK_RC("queue_open", amqp_queue_open(conn, name, NULL, NULL, "durable=false", &q), AMQP_OK))
    return ra_finish();
  for (unsigned i = 0; i < MESSAGES; i++) {
    char body[16];
    int n = snprintf(body, sizeof body, "m%u", i);
    amqp_publish(q, body, (size_t)n);
  }
  CHECK_RC("consume_ex_a", amqp_consume_ex(q, cb_a, &a, release, 4, &ida), AMQP_OK);
  RA_WAIT_UNTIL(atomic_load(&a.started) > 0, 10000);
  CHECK_RC("consume_ex_b", amqp_consume_ex(q, cb_b, &b, release, 1, &idb), AMQP_OK);

  /* Every message but the one in the ended callback is acked once: by A
   * before its thread ended, the rest by B (what A held went back to the
   * broker). That one stays unsettled until the channel closes. */
  RA_WAIT_UNTIL(atomic_load(&a.acked) + atomic_load(&b.acked) >= MESSAGES - 1, 30000);
  ra_sleep_ms(200);
  unsigned acked = atomic_load(&a.acked) + atomic_load(&b.acked);
  CHECK("all_others_acked_once", acked == MESSAGES - 1, "A acked %u, B acked %u, of %u",
        atomic_load(&a.acked), atomic_load(&b.acked), MESSAGES);
  ra_info("A started %u, acked %u; B acked %u", atomic_load(&a.started), atomic_load(&a.acked),
          atomic_load(&b.acked));
  CHECK("a_unwound", atomic_load(&a.unwound_at_ms) != 0, "the first callback never ended");
  CHECK("a_no_callback_after_unwind", atomic_load(&a.started_after_unwind) == 0,
        "%u callbacks of the ended set started after its thread ended (A started %u in all)",
        atomic_load(&a.started_after_unwind), atomic_load(&a.started));
  CHECK("b_took_the_rest", atomic_load(&b.acked) > 0, "B acked nothing");

  amqp_close_report report = {.size = sizeof report};
  uint64_t t0 = ra_now_ms();
  CHECK_RC("close", amqp_close_ex(conn, 10000, &report), AMQP_OK);
  CHECK("close_did_not_wait", ra_now_ms() - t0 < ra_scaled_ms(5000), "close took %" PRIu64 " ms",
        ra_now_ms() - t0);
  CHECK("release_b_once", atomic_load(&b.released) == 1, "%u", atomic_load(&b.released));
  CHECK("release_a_never", atomic_load(&a.released) == 0, "%u", atomic_load(&a.released));
  ra_delete_queue(name);
  return ra_finish();
}
