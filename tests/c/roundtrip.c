/* Publish/consume round trip against the test broker.
 *
 * - N messages on the default exchange plus an empty and a binary body, 4
 *   consumers: every message arrives exactly once (no outage here), with the
 *   right delivery fields, on library threads (never the caller's, never a
 *   tokio worker), at most `repeat` callbacks at a time.
 * - a queue bound to a named exchange: exchange/routing key fields.
 * - dispositions: ACK, REJECT, REQUEUE (redelivered once, then ACK).
 * - the broker refusing a declaration (406): AMQP_ERR_BROKER, the connection
 *   stays usable.
 * - stats, close_graceful with nothing left, handles invalid afterwards.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#define N 2000
#define REPEAT 4
#define BINARY_LEN 256

struct rt {
  pthread_t main_thread;
  amqp_queue_handle q;
  const char *qname;
  atomic_uint counts[N];
  atomic_uint total;
  atomic_uint empty_seen;
  atomic_uint binary_seen;
  atomic_uint binary_bad;
  atomic_uint bad_body;
  atomic_uint bad_fields;
  atomic_uint on_main_thread;
  atomic_uint on_tokio_thread;
  atomic_int in_cb;
  atomic_int max_in_cb;
  char bad_field_desc[256];
  char thread_name[32];
};

static struct rt rt;

static amqp_disposition rt_cb(const amqp_delivery *d, void *ud) {
  struct rt *s = ud;
  int now = atomic_fetch_add(&s->in_cb, 1) + 1;
  int prev = atomic_load(&s->max_in_cb);
  while (now > prev && !atomic_compare_exchange_weak(&s->max_in_cb, &prev, now)) {
  }

  if (pthread_equal(pthread_self(), s->main_thread)) atomic_fetch_add(&s->on_main_thread, 1);
  {
    char tn[32] = "";
    pthread_getname_np(pthread_self(), tn, sizeof tn);
    if (strstr(tn, "tokio") != NULL) atomic_fetch_add(&s->on_tokio_thread, 1);
    if (s->thread_name[0] == '\0') memcpy(s->thread_name, tn, sizeof tn);
  }

  size_t qlen = strlen(s->qname);
  if (d->queue != s->q || d->exchange_len != 0 || d->routing_key_len != qlen ||
      (qlen > 0 && (d->routing_key == NULL || memcmp(d->routing_key, s->qname, qlen) != 0)) ||
      d->redelivered || d->delivery_tag == 0) {
    if (atomic_fetch_add(&s->bad_fields, 1) == 0)
      snprintf(s->bad_field_desc, sizeof s->bad_field_desc,
               "queue=%" PRIu64 " (want %" PRIu64 ") exchange_len=%zu routing_key=%.*s "
               "redelivered=%d tag=%" PRIu64,
               d->queue, s->q, d->exchange_len, (int)(d->routing_key_len < 100 ? d->routing_key_len : 100),
               d->routing_key ? d->routing_key : "(null)", (int)d->redelivered, d->delivery_tag);
  }

  if (d->body_len == 0) {
    atomic_fetch_add(&s->empty_seen, 1);
  } else if (d->body_len == BINARY_LEN) {
    bool ok = d->body != NULL;
    for (size_t i = 0; ok && i < BINARY_LEN; i++) ok = d->body[i] == (uint8_t)(255 - i);
    atomic_fetch_add(ok ? &s->binary_seen : &s->binary_bad, 1);
  } else {
    char tmp[32];
    unsigned seq;
    size_t len = d->body_len < sizeof tmp - 1 ? d->body_len : sizeof tmp - 1;
    if (len > 0) memcpy(tmp, d->body, len);
    tmp[len] = '\0';
    if (sscanf(tmp, "rt-%6u", &seq) == 1 && seq < N && d->body_len == 9)
      atomic_fetch_add(&s->counts[seq], 1);
    else
      atomic_fetch_add(&s->bad_body, 1);
  }
  if (atomic_load(&s->total) % 97 == 0) ra_sleep_ms(2); /* let callbacks overlap */
  atomic_fetch_add(&s->total, 1);
  atomic_fetch_sub(&s->in_cb, 1);
  return AMQP_ACK;
}

/* --- exchange fields --- */
struct ex {
  const char *exchange;
  const char *rk;
  atomic_uint ok;
  atomic_uint bad;
};
static amqp_disposition ex_cb(const amqp_delivery *d, void *ud) {
  struct ex *s = ud;
  if (d->exchange_len == strlen(s->exchange) && memcmp(d->exchange, s->exchange, d->exchange_len) == 0 &&
      d->routing_key_len == strlen(s->rk) && memcmp(d->routing_key, s->rk, d->routing_key_len) == 0 &&
      d->body_len == 2 && memcmp(d->body, "ex", 2) == 0)
    atomic_fetch_add(&s->ok, 1);
  else
    atomic_fetch_add(&s->bad, 1);
  return AMQP_ACK;
}

/* --- dispositions --- */
struct disp {
  atomic_uint ack_seen, reject_seen, requeue_first, requeue_redelivered, other;
  atomic_uint bogus_first, bogus_redelivered;
};
static amqp_disposition disp_cb(const amqp_delivery *d, void *ud) {
  struct disp *s = ud;
  if (d->body_len == 3 && memcmp(d->body, "ack", 3) == 0) {
    atomic_fetch_add(&s->ack_seen, 1);
    return AMQP_ACK;
  }
  if (d->body_len == 6 && memcmp(d->body, "reject", 6) == 0) {
    atomic_fetch_add(&s->reject_seen, 1);
    return AMQP_REJECT;
  }
  if (d->body_len == 7 && memcmp(d->body, "requeue", 7) == 0) {
    if (!d->redelivered) {
      atomic_fetch_add(&s->requeue_first, 1);
      return AMQP_REQUEUE;
    }
    atomic_fetch_add(&s->requeue_redelivered, 1);
    return AMQP_ACK;
  }
  if (d->body_len == 5 && memcmp(d->body, "bogus", 5) == 0) {
    /* an unknown disposition: the header says it is treated as REQUEUE */
    if (!d->redelivered) {
      atomic_fetch_add(&s->bogus_first, 1);
      return (amqp_disposition)77;
    }
    atomic_fetch_add(&s->bogus_redelivered, 1);
    return AMQP_ACK;
  }
  atomic_fetch_add(&s->other, 1);
  return AMQP_ACK;
}

int main(void) {
  const char *uri;
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0, qx = 0, qd = 0, qr = 0, qr2;
  char qname[128], xname[128], qxname[128], qdname[128], qrname[128];
  uint8_t binary[BINARY_LEN];
  amqp_queue_stats st = {.size = sizeof(amqp_queue_stats)};
  amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};

  ra_init("roundtrip", 100);
  uri = ra_broker_uri();
  rt.main_thread = pthread_self();

  if (!CHECK_RC("connect", amqp_connect(uri, NULL, &conn), AMQP_OK)) return ra_finish();
  if (!CHECK_RC("wait_connected", amqp_wait_connected(conn, 15000), AMQP_OK)) return ra_finish();

  ra_unique_name(qname, sizeof qname, "ra-rt");
  rt.qname = qname;
  if (!CHECK_RC("queue_open", amqp_queue_open(conn, qname, NULL, NULL, "durable=false", &q), AMQP_OK))
    return ra_finish();
  rt.q = q;

  /* Publish before consuming: publishing never waits for the network. */
  {
    uint64_t t0 = ra_now_ms();
    int ok = 0;
    char body[16];
    for (int i = 0; i < N; i++) {
      int len = snprintf(body, sizeof body, "rt-%06d", i);
      ok += amqp_publish(q, body, (size_t)len) == AMQP_OK;
    }
    for (int i = 0; i < BINARY_LEN; i++) binary[i] = (uint8_t)(255 - i);
    ok += amqp_publish(q, binary, BINARY_LEN) == AMQP_OK;
    ok += amqp_publish(q, NULL, 0) == AMQP_OK;
    uint64_t dt = ra_now_ms() - t0;
    CHECK("publish_all_ok", ok == N + 2, "%d of %d accepted: %s", ok, N + 2, ra_last_error_str());
    CHECK("publish_is_fast", dt < 3000, "%d publishes took %" PRIu64 " ms", N + 2, dt);
  }

  CHECK_RC("consume", amqp_consume(q, rt_cb, &rt, REPEAT), AMQP_OK);
  RA_WAIT_UNTIL(atomic_load(&rt.total) >= N + 2, 30000);
  ra_sleep_ms(300); /* catch late duplicates */
  {
    unsigned distinct = 0, dups = 0;
    for (int i = 0; i < N; i++) {
      unsigned c = atomic_load(&rt.counts[i]);
      if (c > 0) distinct++;
      if (c > 1) dups += c - 1;
    }
    CHECK("all_delivered", distinct == N, "%u of %d distinct (total callbacks %u)", distinct, N,
          atomic_load(&rt.total));
    CHECK("no_duplicates_without_outage", dups == 0, "%u duplicates", dups);
    CHECK("bodies_intact", atomic_load(&rt.bad_body) == 0, "%u unexpected bodies",
          atomic_load(&rt.bad_body));
    CHECK("empty_body_delivered", atomic_load(&rt.empty_seen) == 1, "seen %u times",
          atomic_load(&rt.empty_seen));
    CHECK("binary_body_delivered",
          atomic_load(&rt.binary_seen) == 1 && atomic_load(&rt.binary_bad) == 0,
          "intact %u, damaged %u", atomic_load(&rt.binary_seen), atomic_load(&rt.binary_bad));
    CHECK("delivery_fields", atomic_load(&rt.bad_fields) == 0, "%u bad, first: %s",
          atomic_load(&rt.bad_fields), rt.bad_field_desc);
    CHECK("callbacks_not_on_caller_thread", atomic_load(&rt.on_main_thread) == 0, "%u on main",
          atomic_load(&rt.on_main_thread));
    CHECK("callbacks_not_on_tokio_worker", atomic_load(&rt.on_tokio_thread) == 0,
          "%u on a thread named tokio* (e.g. \"%s\")", atomic_load(&rt.on_tokio_thread),
          rt.thread_name);
    CHECK("callbacks_on_library_consumer_thread", strcmp(rt.thread_name, "ramqp-consumer") == 0,
          "thread name \"%s\"", rt.thread_name);
    CHECK("concurrency_at_most_repeat", atomic_load(&rt.max_in_cb) <= REPEAT,
          "%d callbacks at once", atomic_load(&rt.max_in_cb));
    ra_info("callback thread name \"%s\", max concurrent callbacks %d", rt.thread_name,
            atomic_load(&rt.max_in_cb));
  }
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  RA_WAIT_UNTIL(amqp_queue_get_stats(q, &st) == AMQP_OK && st.acked >= N + 2 && st.confirmed >= N + 2, 5000);
  CHECK("queue_stats",
        st.published == N + 2 && st.confirmed == N + 2 && st.buffered == 0 &&
            st.buffered_bytes == 0 && st.in_flight == 0 && st.nacked == 0 && st.resent == 0 &&
            st.delivered == N + 2 && st.acked == N + 2 && st.rejected == 0 && st.requeued == 0,
        "published=%" PRIu64 " confirmed=%" PRIu64 " buffered=%" PRIu64 " bytes=%" PRIu64
        " in_flight=%" PRIu64 " nacked=%" PRIu64 " resent=%" PRIu64 " delivered=%" PRIu64
        " acked=%" PRIu64 " rejected=%" PRIu64 " requeued=%" PRIu64,
        st.published, st.confirmed, st.buffered, st.buffered_bytes, st.in_flight, st.nacked,
        st.resent, st.delivered, st.acked, st.rejected, st.requeued);

  /* A named exchange: the exchange and routing key reach the callback. */
  {
    static struct ex ex;
    ra_unique_name(xname, sizeof xname, "ra-rt-x");
    ra_unique_name(qxname, sizeof qxname, "ra-rt-qx");
    ex.exchange = xname;
    ex.rk = "rk.test";
    if (CHECK_RC("queue_open_exchange",
                 amqp_queue_open(conn, qxname, xname, "rk.test", "durable=false", &qx), AMQP_OK)) {
      CHECK_RC("consume_exchange", amqp_consume(qx, ex_cb, &ex, 1), AMQP_OK);
      for (int i = 0; i < 10; i++) amqp_publish(qx, "ex", 2);
      RA_WAIT_UNTIL(atomic_load(&ex.ok) + atomic_load(&ex.bad) >= 10, 10000);
      CHECK("exchange_fields", atomic_load(&ex.ok) == 10 && atomic_load(&ex.bad) == 0,
            "ok %u bad %u", atomic_load(&ex.ok), atomic_load(&ex.bad));
    }
  }

  /* Dispositions. */
  {
    static struct disp ds;
    ra_unique_name(qdname, sizeof qdname, "ra-rt-disp");
    if (CHECK_RC("queue_open_disp", amqp_queue_open(conn, qdname, NULL, NULL, "durable=false", &qd), AMQP_OK)) {
      amqp_publish(qd, "ack", 3);
      amqp_publish(qd, "reject", 6);
      amqp_publish(qd, "requeue", 7);
      amqp_publish(qd, "bogus", 5);
      CHECK_RC("consume_disp", amqp_consume(qd, disp_cb, &ds, 1), AMQP_OK);
      RA_WAIT_UNTIL(atomic_load(&ds.requeue_redelivered) >= 1 && atomic_load(&ds.ack_seen) >= 1 &&
                        atomic_load(&ds.reject_seen) >= 1 && atomic_load(&ds.bogus_redelivered) >= 1,
                    10000);
      ra_sleep_ms(500); /* a rejected message must not come back */
      CHECK("disposition_ack", atomic_load(&ds.ack_seen) == 1, "ack seen %u", atomic_load(&ds.ack_seen));
      CHECK("disposition_reject_not_redelivered", atomic_load(&ds.reject_seen) == 1,
            "reject seen %u", atomic_load(&ds.reject_seen));
      CHECK("disposition_requeue_redelivered",
            atomic_load(&ds.requeue_first) == 1 && atomic_load(&ds.requeue_redelivered) == 1,
            "first %u, redelivered %u", atomic_load(&ds.requeue_first),
            atomic_load(&ds.requeue_redelivered));
      CHECK("disposition_unknown_is_requeue",
            atomic_load(&ds.bogus_first) == 1 && atomic_load(&ds.bogus_redelivered) == 1,
            "first %u, redelivered %u", atomic_load(&ds.bogus_first),
            atomic_load(&ds.bogus_redelivered));
      CHECK("disposition_no_other", atomic_load(&ds.other) == 0, "%u unexpected",
            atomic_load(&ds.other));
      memset(&st, 0, sizeof st);
      st.size = sizeof st;
      amqp_queue_get_stats(qd, &st);
      CHECK("disposition_stats",
            st.delivered == 6 && st.acked == 3 && st.rejected == 1 && st.requeued == 2,
            "delivered=%" PRIu64 " acked=%" PRIu64 " rejected=%" PRIu64 " requeued=%" PRIu64,
            st.delivered, st.acked, st.rejected, st.requeued);
    }
  }

  /* The broker refuses a declaration with other attributes (406). */
  ra_unique_name(qrname, sizeof qrname, "ra-rt-refuse");
  if (CHECK_RC("queue_open_refuse_first", amqp_queue_open(conn, qrname, NULL, NULL, "durable=false", &qr), AMQP_OK)) {
    qr2 = UINT64_C(0xDEADBEEF);
    CHECK_RC("queue_open_other_attributes_is_broker_error",
             amqp_queue_open(conn, qrname, NULL, NULL, "durable=true", &qr2), AMQP_ERR_BROKER);
    CHECK("broker_error_out_untouched", qr2 == UINT64_C(0xDEADBEEF), "out was written");
    {
      const char *msg = ra_last_error_str();
      CHECK("broker_error_message", msg[0] != '\0', "amqp_last_error is empty");
      ra_info("406 message: %s", msg);
    }
    /* the connection and the other queues keep working */
    CHECK_RC("publish_after_refusal", amqp_publish(q, "rt-000000", 9), AMQP_OK);
    RA_WAIT_UNTIL(atomic_load(&rt.total) >= N + 3, 10000);
    CHECK("delivery_after_refusal", atomic_load(&rt.total) == N + 3, "total %u",
          atomic_load(&rt.total));
    memset(&cs, 0, sizeof cs);
    cs.size = sizeof cs;
    amqp_connection_get_stats(conn, &cs);
    CHECK("connection_not_reconnected_by_refusal", cs.state == AMQP_STATE_CONNECTED && cs.connects == 1,
          "state=%s connects=%" PRIu64, amqp_connection_state_str(cs.state), cs.connects);
  }

  memset(&cs, 0, sizeof cs);

  cs.size = sizeof cs;
  if (CHECK_RC("connection_stats", amqp_connection_get_stats(conn, &cs), AMQP_OK))
    CHECK("connection_stats_values",
          cs.state == AMQP_STATE_CONNECTED && cs.connects == 1 && cs.consecutive_failures == 0 &&
              cs.queues == 4,
          "state=%s connects=%" PRIu64 " consecutive_failures=%" PRIu64 " queues=%" PRIu64
          " (want CONNECTED, 1, 0, 4)",
          amqp_connection_state_str(cs.state), cs.connects, cs.consecutive_failures, cs.queues);

  {
    uint64_t unsent = 12345;
    CHECK_RC("close_graceful", amqp_close_graceful(conn, 10000, &unsent), AMQP_OK);
    CHECK("close_graceful_unsent_0", unsent == 0, "unsent=%" PRIu64, unsent);
    CHECK_RC("queue_invalid_after_close", amqp_publish(q, "x", 1), AMQP_ERR_INVALID_HANDLE);
    CHECK_RC("conn_invalid_after_close", amqp_wait_connected(conn, 0), AMQP_ERR_INVALID_HANDLE);
  }
  ra_delete_queue(qname);
  ra_delete_queue(qxname);
  ra_delete_queue(qdname);
  ra_delete_queue(qrname);
  return ra_finish();
}
