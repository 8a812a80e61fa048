/* Message properties from C (issue 12): amqp_publish_message with string
 * properties, a priority, a timestamp and headers of several types (a nested
 * table and an array among them), read back in a consume callback through
 * amqp_delivery.message; a per-message routing key that no queue takes is
 * reported AMQP_REPORT_UNROUTABLE; bad descriptions are
 * AMQP_ERR_INVALID_ARGUMENT.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

struct got {
  atomic_uint count;
  atomic_uint bad;
  char why[256];
};

static void bad(struct got *g, const char *fmt, const char *detail) {
  if (atomic_fetch_add(&g->bad, 1) == 0) snprintf(g->why, sizeof g->why, fmt, detail);
}

static bool str_is(const char *have, const char *want) { return have && strcmp(have, want) == 0; }

static bool bytes_is(const amqp_value *v, uint32_t kind, const char *want) {
  return v->kind == kind && v->len == strlen(want) && memcmp(v->bytes, want, v->len) == 0;
}

static const amqp_field *find(const amqp_field *f, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(f[i].key, key) == 0) return &f[i];
  return NULL;
}

static amqp_disposition on_delivery(const amqp_delivery *d, void *ud) {
  struct got *g = ud;
  const amqp_message *m = d->message;
  if (amqp_abi_version() < 3 || m == NULL) {
    bad(g, "%s", "no message (ABI < 3?)");
  } else if (d->body_len == 5 && memcmp(d->body, "plain", 5) == 0) {
    if (m->present & ~AMQP_PROP_DELIVERY_MODE) bad(g, "%s", "a plain message with properties");
  } else {
    if (!str_is(m->content_type, "application/json")) bad(g, "content_type %s", m->content_type);
    if (!str_is(m->correlation_id, "corr-1")) bad(g, "correlation_id %s", m->correlation_id);
    if (!str_is(m->reply_to, "replies")) bad(g, "reply_to %s", m->reply_to);
    if (!str_is(m->message_id, "id-1")) bad(g, "message_id %s", m->message_id);
    if (!str_is(m->app_id, "c-test")) bad(g, "app_id %s", m->app_id);
    if (m->content_encoding != NULL) bad(g, "%s", "content_encoding set");
    if (m->priority != 5 || !(m->present & AMQP_PROP_PRIORITY)) bad(g, "%s", "priority");
    if (m->timestamp != 1764460800u || !(m->present & AMQP_PROP_TIMESTAMP)) bad(g, "%s", "timestamp");
    if (m->delivery_mode != 1) bad(g, "%s", "delivery_mode");
    const amqp_field *h = m->headers;
    size_t n = m->header_count;
    const amqp_field *tp = find(h, n, "traceparent");
    const amqp_field *count = find(h, n, "count");
    const amqp_field *nested = find(h, n, "nested");
    const amqp_field *list = find(h, n, "list");
    if (n != 4 || !tp || !count || !nested || !list) {
      bad(g, "%s", "headers missing");
    } else {
      if (!bytes_is(&tp->value, AMQP_VALUE_STRING, "00-abc-def-01")) bad(g, "%s", "traceparent");
      if (count->value.kind != AMQP_VALUE_INT || count->value.integer != -42) bad(g, "%s", "count");
      const amqp_field *inner = nested->value.kind == AMQP_VALUE_TABLE && nested->value.len == 1
                                    ? (const amqp_field *)nested->value.bytes
                                    : NULL;
      if (!inner || strcmp(inner->key, "ok") != 0 || inner->value.kind != AMQP_VALUE_BOOL ||
          inner->value.integer != 1)
        bad(g, "%s", "nested table");
      const amqp_value *items = list->value.kind == AMQP_VALUE_ARRAY && list->value.len == 2
                                    ? (const amqp_value *)list->value.bytes
                                    : NULL;
      if (!items || items[0].kind != AMQP_VALUE_DOUBLE || items[0].number != 2.5 ||
          !bytes_is(&items[1], AMQP_VALUE_BYTES, "\x01\x02"))
        bad(g, "%s", "array");
    }
    if (d->properties == NULL || d->properties_len < 20) bad(g, "%s", "raw property bytes");
  }
  atomic_fetch_add(&g->count, 1);
  return AMQP_ACK;
}

struct reports {
  atomic_uint count;
  atomic_uint unroutable;
  atomic_uint confirmed;
};

static void on_report(const amqp_delivery_report *r, void *ud) {
  struct reports *s = ud;
  if (r->status == AMQP_REPORT_UNROUTABLE && r->tag == 2 && r->reply_code == 312)
    atomic_fetch_add(&s->unroutable, 1);
  if (r->status == AMQP_REPORT_CONFIRMED) atomic_fetch_add(&s->confirmed, 1);
  atomic_fetch_add(&s->count, 1);
}

int main(void) {
  ra_init("message_properties", 120);
  static struct got g;
  static struct reports reps;
  amqp_connection_handle c;
  amqp_queue_handle q;
  char name[128], exchange[160];
  ra_unique_name(name, sizeof name, "ra-c-props");
  snprintf(exchange, sizeof exchange, "ra-x-%s", name);
  CHECK_RC("connect", amqp_connect(ra_broker_uri(), NULL, &c), AMQP_OK);
  CHECK_RC("wait_connected", amqp_wait_connected(c, 10000), AMQP_OK);
  CHECK_RC("queue_open", amqp_queue_open(c, name, exchange, "orders", "durable=false&exchange_type=direct", &q),
           AMQP_OK);
  CHECK_RC("set_report_callback", amqp_set_report_callback(q, on_report, &reps), AMQP_OK);

  amqp_field inner[] = {{"ok", {.kind = AMQP_VALUE_BOOL, .integer = 1}}};
  amqp_value items[] = {{.kind = AMQP_VALUE_DOUBLE, .number = 2.5},
                        {.kind = AMQP_VALUE_BYTES, .bytes = "\x01\x02", .len = 2}};
  amqp_field headers[] = {
      {"traceparent", {.kind = AMQP_VALUE_STRING, .bytes = "00-abc-def-01", .len = 13}},
      {"count", {.kind = AMQP_VALUE_INT, .integer = -42}},
      {"nested", {.kind = AMQP_VALUE_TABLE, .bytes = inner, .len = 1}},
      {"list", {.kind = AMQP_VALUE_ARRAY, .bytes = items, .len = 2}},
  };
  amqp_message m = {.size = sizeof m};
  m.content_type = "application/json";
  m.correlation_id = "corr-1";
  m.reply_to = "replies";
  m.message_id = "id-1";
  m.app_id = "c-test";
  m.priority = 5;
  m.timestamp = 1764460800u;
  m.delivery_mode = 1;
  m.headers = headers;
  m.header_count = 4;
  m.tag = 1;
  CHECK_RC("publish_message", amqp_publish_message(q, "{\"a\":1}", 7, &m), AMQP_OK);
  amqp_message lost = {.size = sizeof lost};
  lost.routing_key = "invoices";
  lost.tag = 2;
  CHECK_RC("publish_message (unroutable key)", amqp_publish_message(q, "x", 1, &lost), AMQP_OK);
  CHECK_RC("publish_message (NULL: plain)", amqp_publish_message(q, "plain", 5, NULL), AMQP_OK);

  amqp_message zero = {0};
  CHECK_RC("size 0 is refused", amqp_publish_message(q, "x", 1, &zero), AMQP_ERR_INVALID_ARGUMENT);
  amqp_message nulls = {.size = sizeof nulls};
  nulls.header_count = 2;
  CHECK_RC("NULL headers with a count", amqp_publish_message(q, "x", 1, &nulls), AMQP_ERR_INVALID_ARGUMENT);
  amqp_field unknown[] = {{"k", {.kind = 1234}}};
  amqp_message bad_kind = {.size = sizeof bad_kind};
  bad_kind.headers = unknown;
  bad_kind.header_count = 1;
  CHECK_RC("unknown value kind", amqp_publish_message(q, "x", 1, &bad_kind), AMQP_ERR_INVALID_ARGUMENT);

  for (uint64_t end = ra_now_ms() + ra_scaled_ms(10000); ra_now_ms() < end; ra_sleep_ms(5))
    if (atomic_load(&reps.count) >= 3) break;
  CHECK("reports: two confirmed, one unroutable",
        atomic_load(&reps.count) == 3 && atomic_load(&reps.confirmed) == 2 && atomic_load(&reps.unroutable) == 1,
        "count %u confirmed %u unroutable %u", atomic_load(&reps.count), atomic_load(&reps.confirmed),
        atomic_load(&reps.unroutable));
  amqp_queue_stats st = {.size = sizeof st};
  CHECK_RC("stats", amqp_queue_get_stats(q, &st), AMQP_OK);
  CHECK("unroutable counted", st.unroutable == 1 && st.failed == 1, "unroutable %" PRIu64, st.unroutable);

  CHECK_RC("consume", amqp_consume(q, on_delivery, &g, 1), AMQP_OK);
  for (uint64_t end = ra_now_ms() + ra_scaled_ms(10000); ra_now_ms() < end; ra_sleep_ms(5))
    if (atomic_load(&g.count) >= 2) break;
  CHECK("two deliveries", atomic_load(&g.count) == 2, "%u", atomic_load(&g.count));
  CHECK("every property and header read back", atomic_load(&g.bad) == 0, "%s", g.why);
  uint64_t unsent = 0;
  CHECK_RC("close", amqp_close_graceful(c, 10000, &unsent), AMQP_OK);
  return ra_failures == 0 ? 0 : 1;
}
