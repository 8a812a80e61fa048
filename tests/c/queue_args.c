/* Queue and consumer arguments from C (issue 12).
 *
 * - a server-named queue bound to an exchange: amqp_queue_name reads the
 *   broker's name (snprintf-like: a short buffer truncates and NUL-terminates,
 *   the full length is returned), messages published through the exchange are
 *   consumed by consumers named "c-test";
 * - close_all_connections: a new name, and messages published after it arrive;
 * - queue arguments (named and arg.) on a named queue; a bad argument value is
 *   AMQP_ERR_INVALID_ARGUMENT naming its key.
 *
 * Needs RESILIENT_AMQP_TEST_URI (and RESILIENT_AMQP_TEST_CTL for the reconnect).
 */
#include "ra_test.h"

#define N 20

static atomic_uint got;

static amqp_disposition count_cb(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  atomic_fetch_add(&got, 1);
  return AMQP_ACK;
}

static bool wait_got(unsigned n, unsigned ms) {
  uint64_t until = ra_now_ms() + ra_scaled_ms(ms);
  while (atomic_load(&got) < n && ra_now_ms() < until) ra_sleep_ms(10);
  return atomic_load(&got) >= n;
}

int main(void) {
  const char *uri;
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0, qa = 0, qbad = 0;
  char xname[128], qaname[128], name[256], first[256], tiny[4];
  size_t len = 0;
  uint64_t unsent = 0;
  amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};

  ra_init("queue_args", 100);
  uri = ra_broker_uri();
  ra_unique_name(xname, sizeof xname, "c-args-ex");
  ra_unique_name(qaname, sizeof qaname, "c-args-q");

  if (!CHECK_RC("connect", amqp_connect(uri, NULL, &conn), AMQP_OK)) return ra_finish();
  if (!CHECK_RC("wait_connected", amqp_wait_connected(conn, 15000), AMQP_OK)) return ra_finish();

  if (!CHECK_RC("open_server_named",
                amqp_queue_open(conn, "", xname, "rk", "durable=false&consumer_name=c-test", &q),
                AMQP_OK))
    return ra_finish();
  CHECK_RC("queue_name", amqp_queue_name(q, name, sizeof name, &len), AMQP_OK);
  CHECK("queue_name_is_the_brokers", strncmp(name, "amq.gen-", 8) == 0 && len == strlen(name),
        "name '%s' len %zu", name, len);
  CHECK_RC("queue_name_truncates", amqp_queue_name(q, tiny, sizeof tiny, &len), AMQP_OK);
  CHECK("queue_name_snprintf", strcmp(tiny, "amq") == 0 && len == strlen(name),
        "tiny '%s' len %zu", tiny, len);
  CHECK_RC("queue_name_len_only", amqp_queue_name(q, NULL, 0, NULL), AMQP_OK);
  memcpy(first, name, sizeof first);

  CHECK_RC("consume", amqp_consume(q, count_cb, NULL, 2), AMQP_OK);
  for (int i = 0; i < N; i++) CHECK_RC("publish", amqp_publish(q, "m", 1), AMQP_OK);
  CHECK("consumed_before_reconnect", wait_got(N, 30000), "got %u of %d", atomic_load(&got), N);

  amqp_connection_get_stats(conn, &cs);
  if (ra_ctl("close_all_connections --global \"c test\"") == 0) {
    uint64_t connects = cs.connects;
    uint64_t until = ra_now_ms() + ra_scaled_ms(30000);
    bool renamed = false;
    while (!renamed && ra_now_ms() < until) {
      ra_sleep_ms(20);
      amqp_connection_get_stats(conn, &cs);
      amqp_queue_name(q, name, sizeof name, &len);
      renamed = cs.connects > connects && len > 0 && strcmp(name, first) != 0;
    }
    CHECK("new_name_after_reconnect", renamed, "name still '%s'", name);
    for (int i = 0; i < N; i++) CHECK_RC("publish_after", amqp_publish(q, "m", 1), AMQP_OK);
    CHECK("consumed_after_reconnect", wait_got(2 * N, 30000), "got %u of %d", atomic_load(&got),
          2 * N);
  } else {
    ra_info("RESILIENT_AMQP_TEST_CTL unset: no reconnect check");
  }

  CHECK_RC("open_with_arguments",
           amqp_queue_open(conn, qaname, NULL, NULL,
                           "durable=false&auto_delete=true&max_length=100&overflow=reject-publish"
                           "&arg.x-message-ttl=int:60000",
                           &qa),
           AMQP_OK);
  CHECK_RC("bad_argument", amqp_queue_open(conn, qaname, NULL, NULL, "arg.x-foo=5", &qbad),
           AMQP_ERR_INVALID_ARGUMENT);
  CHECK("bad_argument_names_its_key", strstr(ra_last_error_str(), "'arg.x-foo'") != NULL,
        "last error: %s", ra_last_error_str());

  CHECK_RC("close_graceful", amqp_close_graceful(conn, 10000, &unsent), AMQP_OK);
  CHECK("nothing_unsent", unsent == 0, "unsent %" PRIu64, unsent);
  return ra_finish();
}
