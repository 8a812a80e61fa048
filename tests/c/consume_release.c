/* Contract v2 from C: amqp_consume_ex's release comes once, on a library
 * thread, after the set's last callback returned; a close whose deadline
 * passes while a callback runs returns AMQP_ERR_TIMEOUT with
 * callbacks_running = 1 (issue 13), and the release follows that callback;
 * amqp_consume_cancel ends one set while another goes on; the _e variants
 * fill errbuf on failure and leave it alone on success.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

struct set_state {
  atomic_uint started, finished, released, used_after_release;
  atomic_uint finished_at_release;
  atomic_bool release_on_library_thread;
  atomic_bool gate; /* callbacks wait until it opens */
};

static amqp_disposition cb(const amqp_delivery *d, void *ud) {
  struct set_state *s = ud;
  (void)d;
  if (atomic_load(&s->released)) atomic_fetch_add(&s->used_after_release, 1);
  atomic_fetch_add(&s->started, 1);
  for (int i = 0; i < 4000 && !atomic_load(&s->gate); i++) ra_sleep_ms(5);
  atomic_fetch_add(&s->finished, 1);
  return AMQP_ACK;
}

static void release(void *ud) {
  struct set_state *s = ud;
  char name[32] = "";
  pthread_getname_np(pthread_self(), name, sizeof name);
  atomic_store(&s->release_on_library_thread, strncmp(name, "ramqp-", 6) == 0);
  atomic_store(&s->finished_at_release, atomic_load(&s->finished));
  atomic_fetch_add(&s->released, 1);
}

static struct set_state a, b;

int main(void) {
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  uint64_t ida = 0, idb = 0;
  char name[128];
  char errbuf[64];

  ra_init("consume_release", 90);
  if (!CHECK_RC("connect", amqp_connect(ra_broker_uri(), NULL, &conn), AMQP_OK)) return ra_finish();
  memset(errbuf, '#', sizeof errbuf);
  errbuf[sizeof errbuf - 1] = '\0';
  CHECK_RC("wait_connected_e", amqp_wait_connected_e(conn, 15000, errbuf, sizeof errbuf), AMQP_OK);
  CHECK("errbuf_untouched_on_success", errbuf[0] == '#' && errbuf[1] == '#', "errbuf: %s", errbuf);
  CHECK_RC("wait_connected_e_bad_handle", amqp_wait_connected_e(999999, 0, errbuf, sizeof errbuf),
           AMQP_ERR_INVALID_HANDLE);
  CHECK("errbuf_filled_on_failure", strstr(errbuf, "999999") != NULL, "errbuf: %s", errbuf);

  ra_unique_name(name, sizeof name, "ra-c-release");
  if (!CHECK_RC("queue_open", amqp_queue_open(conn, name, NULL, NULL, "durable=false", &q), AMQP_OK))
    return ra_finish();
  atomic_store(&a.gate, true);
  CHECK_RC("consume_ex_a", amqp_consume_ex(q, cb, &a, release, 1, &ida), AMQP_OK);
  CHECK_RC("consume_ex_b", amqp_consume_ex(q, cb, &b, release, 1, &idb), AMQP_OK);
  CHECK("ids", ida != 0 && idb != 0 && ida != idb && ida < (1ull << 53) && idb < (1ull << 53),
        "ida=%" PRIu64 " idb=%" PRIu64, ida, idb);

  /* Cancel A: it ends (release), B goes on. */
  CHECK_RC("cancel_a", amqp_consume_cancel(q, ida, 10000), AMQP_OK);
  RA_WAIT_UNTIL(atomic_load(&a.released) == 1, 10000);
  CHECK("release_a_once", atomic_load(&a.released) == 1, "%u", atomic_load(&a.released));
  CHECK("release_a_on_library_thread", atomic_load(&a.release_on_library_thread), "no");
  CHECK_RC("cancel_a_again", amqp_consume_cancel(q, ida, 100), AMQP_ERR_INVALID_ARGUMENT);

  /* B's callback blocks; close times out with it running. */
  amqp_publish(q, "x", 1);
  RA_WAIT_UNTIL(atomic_load(&b.started) == 1, 10000);
  CHECK("b_running", atomic_load(&b.started) == 1 && atomic_load(&b.finished) == 0, "started %u",
        atomic_load(&b.started));
  CHECK("a_not_called", atomic_load(&a.started) == 0, "%u", atomic_load(&a.started));
  amqp_close_report report = {.size = sizeof report};
  CHECK_RC("close_ex_times_out", amqp_close_ex_e(conn, 300, &report, errbuf, sizeof errbuf),
           AMQP_ERR_TIMEOUT);
  CHECK("report_callbacks_running", report.callbacks_running == 1 && report.unsent == 0 &&
        report.unsettled == 0, "running=%" PRIu64 " unsent=%" PRIu64 " unsettled=%" PRIu64,
        report.callbacks_running, report.unsent, report.unsettled);
  CHECK("close_errbuf", strstr(errbuf, "callback") != NULL, "errbuf: %s", errbuf);
  ra_sleep_ms(200);
  CHECK("no_release_while_running", atomic_load(&b.released) == 0, "%u", atomic_load(&b.released));
  atomic_store(&b.gate, true);
  RA_WAIT_UNTIL(atomic_load(&b.released) == 1, 10000);
  ra_sleep_ms(200);
  CHECK("release_b_once", atomic_load(&b.released) == 1, "%u", atomic_load(&b.released));
  CHECK("release_b_after_callback", atomic_load(&b.finished_at_release) == 1, "finished %u",
        atomic_load(&b.finished_at_release));
  CHECK("no_use_after_release",
        atomic_load(&a.used_after_release) + atomic_load(&b.used_after_release) == 0, "used");
  ra_delete_queue(name);
  return ra_finish();
}
