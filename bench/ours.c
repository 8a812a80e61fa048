/* ours.c -- benchmark driver for resilient-amqp (our library, through its C API).
 *
 *   ours MODE key=value...
 *
 * Modes (each prints one JSON line on stdout, see bench/common.h):
 *   publish  uri queue n size durable       amqp_publish n bodies, then wait until
 *                                           amqp_queue_get_stats says buffered == 0;
 *                                           timed from the first publish to the last confirm
 *   consume  uri queue n size prefetch      consume a pre-filled queue: amqp_consume repeat 1,
 *                                           callback returns AMQP_ACK; timed from amqp_consume
 *                                           until the callback count reaches n
 *   consume_pull uri queue n size prefetch batch   the same in pull mode: amqp_consume_pull,
 *                                           amqp_poll up to `batch` (default 256) at a time,
 *                                           each batch acked with amqp_settle_many; timed
 *                                           from amqp_consume_pull until n were polled
 *   latency  uri queue n threads size       the time of each amqp_publish call, n calls in all
 *                                           spread over `threads` threads (one queue handle)
 *   e2e      uri queue rate seconds size [durable]  publish at a fixed rate, consume in the same
 *                                           process; publish -> callback latency
 *   memory   n size                         RSS growth with n buffered messages while the
 *                                           broker is unreachable (a dead local port)
 *   threads  uri queue n size threads queues  `threads` threads publish n in all over one
 *                                           connection, thread i to queue QUEUE.(i % queues);
 *                                           rate to the last confirm, every call's duration
 *   many     uri queue queues n size prefetch   QUEUE.0..QUEUE.K-1 on one connection: publish
 *                                           n/K to each (timed until confirmed), then one
 *                                           amqp_consume per queue (timed until n called
 *                                           back); threads and RSS while consuming
 * Common keys: test=LABEL run=K (copied into the JSON line); auto_id=1 opens the queue with
 *   auto_message_id=true (every plain publish then gets a message_id); copts=K=V&... more
 *   connection options (e.g. copts=inline_delivery=true).
 */
#define _GNU_SOURCE 1

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#define BENCH_PROG "ours"
#include "common.h"
#include "resilient_amqp.h"

static const char *CLIENT = "ours";

/* records the first failure (with amqp_last_error) */
static void set_err(const char *what, amqp_result rc) {
  if (g_err[0] != '\0') return;
  char msg[512] = "";
  amqp_last_error(msg, sizeof msg);
  snprintf(g_err, sizeof g_err, "%s: %s%s%s", what, amqp_result_str(rc), msg[0] ? ": " : "", msg);
}

static const char *queue_options(int durable, long long prefetch, char *buf, size_t cap) {
  int n = snprintf(buf, cap, "durable=%s&persistent=%s&prefetch=%lld&mandatory=%s%s",
                   durable ? "true" : "false", durable ? "true" : "false", prefetch,
                   arg_int("mandatory", 1) ? "true" : "false",
                   arg_int("auto_id", 0) ? "&auto_message_id=true" : "");
  /* spool=DIR [spool_sync=MODE]: the on-disk spool (pub_spool_64) */
  const char *spool = arg_str("spool", "");
  if (spool[0] != '\0' && n > 0 && (size_t)n < cap)
    snprintf(buf + n, cap - (size_t)n, "&spool_dir=%s&spool_sync=%s", spool,
             arg_str("spool_sync", "batch"));
  return buf;
}

/* connect, wait, open the queue; buffer bounds max_msgs/max_bytes (large enough that nothing
 * is refused), or the library's defaults when max_msgs is 0 */
static int open_queue(long long max_msgs, long long max_bytes, int durable, long long prefetch,
                      amqp_connection_handle *conn, amqp_queue_handle *q) {
  char copts[512], qopts[1024];
  /* copts=...: more connection options (e.g. inline_delivery=true) */
  const char *extra = arg_str("copts", "");
  if (max_msgs > 0)
    snprintf(copts, sizeof copts, "max_buffered=%lld&max_buffered_bytes=%lld%s%s", max_msgs,
             max_bytes, *extra ? "&" : "", extra);
  else
    snprintf(copts, sizeof copts, "%s", extra);
  amqp_result rc = amqp_connect(arg_str("uri", ""), copts[0] ? copts : NULL, conn);
  if (rc != AMQP_OK) {
    set_err("amqp_connect", rc);
    return -1;
  }
  rc = amqp_wait_connected(*conn, 20000);
  if (rc != AMQP_OK) {
    set_err("amqp_wait_connected", rc);
    return -1;
  }
  rc = amqp_queue_open(*conn, arg_str("queue", "bench"), NULL, NULL,
                       queue_options(durable, prefetch, qopts, sizeof qopts), q);
  if (rc != AMQP_OK) {
    set_err("amqp_queue_open", rc);
    return -1;
  }
  return 0;
}

/* waits until every published message is confirmed; returns the time it saw it */
static uint64_t wait_confirmed(amqp_queue_handle q, uint64_t timeout_ns, amqp_queue_stats *s) {
  uint64_t deadline = now_ns() + timeout_ns;
  for (;;) {
    amqp_result rc = amqp_queue_get_stats(q, s);
    if (rc != AMQP_OK) {
      set_err("amqp_queue_get_stats", rc);
      return now_ns();
    }
    uint64_t t = now_ns();
    if (s->buffered == 0) return t;
    if (t > deadline) {
      set_errf("not confirmed after %.0f s: %" PRIu64 " still buffered", timeout_ns / 1e9,
               s->buffered);
      return t;
    }
    /* 1 ms: at most 1 ms late on runs of seconds, and few wake-ups counted as our CPU */
    sleep_us(1000);
  }
}

static void close_conn(amqp_connection_handle conn) {
  uint64_t unsent = 0;
  amqp_result rc = amqp_close_graceful(conn, 10000, &unsent);
  if (rc != AMQP_OK) set_err("amqp_close_graceful", rc);
  if (unsent != 0) set_errf("amqp_close_graceful: %" PRIu64 " unsent", unsent);
}

/* ---- publish ------------------------------------------------------------------ */

/* pub_props_64: five string properties (message_id per message) and three headers, the same
 * as rmqc.c's. */
static const char TRACEPARENT[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static amqp_result publish_props(amqp_queue_handle q, const uint8_t *body, size_t size, long long i) {
  char id[32];
  snprintf(id, sizeof id, "msg-%lld", i);
  amqp_field headers[3] = {
      {"traceparent", {.kind = AMQP_VALUE_STRING, .bytes = TRACEPARENT, .len = sizeof TRACEPARENT - 1}},
      {"tenant", {.kind = AMQP_VALUE_STRING, .bytes = "acme", .len = 4}},
      {"attempt", {.kind = AMQP_VALUE_INT, .integer = 1}},
  };
  amqp_message m = {.size = sizeof m};
  m.content_type = "application/json";
  m.correlation_id = "corr-0123456789";
  m.message_id = id;
  m.message_type = "order.created";
  m.app_id = "bench";
  m.headers = headers;
  m.header_count = 3;
  for (;;) {
    amqp_result rc = amqp_publish_message(q, body, size, &m);
    if (rc != AMQP_ERR_BUFFER_FULL) return rc;
    usleep(100); /* as amqp_publish_wait: confirms make room */
  }
}

static int mode_publish(void) {
  long long n = arg_int("n", 200000), size = arg_int("size", 64);
  int durable = (int)arg_int("durable", 0);
  int props = (int)arg_int("props", 0);
  /* client=NAME: the spool case's variants (ours, ours-spool-batch, ...) */
  json_begin(arg_str("client", CLIENT), "publish");
  json_b("props", props);
  json_i("n", n);
  json_i("size", size);
  json_b("durable", durable);
  json_b("mandatory", (int)arg_int("mandatory", 1));
  json_s("buffer_limits", "library defaults (100000 messages, 64 MiB)");
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  /* The library's default buffer bounds; a producer faster than the broker sleeps in
   * amqp_publish_wait until confirms make room (as rabbitmq-c's driver waits on its window). */
  if (open_queue(0, 0, durable, 100, &conn, &q) == 0) {
    uint8_t *body = calloc(1, (size_t)size + 16);
    double c0 = cpu_seconds();
    uint64_t t0 = now_ns();
    for (long long i = 0; i < n && g_err[0] == '\0'; i++) {
      fill_body(body, (size_t)size, (uint64_t)i, 0);
      amqp_result rc = props ? publish_props(q, body, (size_t)size, i)
                             : amqp_publish_wait(q, body, (size_t)size, 60000);
      if (rc != AMQP_OK) set_err(props ? "amqp_publish_message" : "amqp_publish_wait", rc);
    }
    uint64_t t_calls = now_ns();
    amqp_queue_stats s = {.size = sizeof(amqp_queue_stats)};
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    uint64_t t1 = wait_confirmed(q, 300ull * 1000000000ull, &s);
    double c1 = cpu_seconds();
    double secs = (t1 - t0) / 1e9;
    json_f("seconds", secs);
    json_f("msgs_per_s", n / secs);
    json_f("calls_seconds", (t_calls - t0) / 1e9);
    json_f("cpu_s", c1 - c0);
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_u("confirmed", s.confirmed);
    json_u("nacked", s.nacked);
    json_u("resent", s.resent);
    json_i("rss_peak_kb", proc_status_kb("VmHWM"));
    if (g_err[0] == '\0' && s.confirmed != (uint64_t)n)
      set_errf("confirmed %" PRIu64 " of %lld", s.confirmed, n);
    free(body);
  }
  if (conn != 0) close_conn(conn);
  return finish();
}

/* ---- consume ------------------------------------------------------------------ */

typedef struct {
  atomic_uint_fast64_t count;
  atomic_uint_fast64_t bad;
  atomic_uint_fast64_t t_last;
  uint64_t n;
  size_t size;
} consume_state;

static amqp_disposition on_consume(const amqp_delivery *d, void *ud) {
  consume_state *st = ud;
  if (d->body_len != st->size) atomic_fetch_add(&st->bad, 1);
  uint64_t c = atomic_fetch_add(&st->count, 1) + 1;
  if (c == st->n) atomic_store(&st->t_last, now_ns());
  return AMQP_ACK;
}

static int mode_consume(void) {
  long long n = arg_int("n", 200000), size = arg_int("size", 64);
  long long prefetch = arg_int("prefetch", 500);
  json_begin(CLIENT, "consume");
  json_i("n", n);
  json_i("size", size);
  json_i("prefetch", prefetch);
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  static consume_state st;
  st.n = (uint64_t)n;
  st.size = (size_t)size;
  if (open_queue(100000, 64ll << 20, 0, prefetch, &conn, &q) == 0) {
    double c0 = cpu_seconds();
    long long v0, i0, v1, i1;
    ctx_switches(&v0, &i0);
    uint64_t t0 = now_ns();
    amqp_result rc = amqp_consume(q, on_consume, &st, 1);
    if (rc != AMQP_OK) set_err("amqp_consume", rc);
    uint64_t deadline = t0 + 300ull * 1000000000ull;
    while (g_err[0] == '\0' && atomic_load(&st.count) < (uint64_t)n) {
      if (now_ns() > deadline) {
        set_errf("consumed %" PRIu64 " of %lld after 300 s", (uint64_t)atomic_load(&st.count), n);
        break;
      }
      sleep_us(1000);
    }
    double c1 = cpu_seconds();
    ctx_switches(&v1, &i1);
    uint64_t t1 = atomic_load(&st.t_last);
    if (t1 == 0) t1 = now_ns();
    /* every ack handed to the channel (the broker shows 0 messages: checked by bench.sh) */
    amqp_queue_stats s = {.size = sizeof(amqp_queue_stats)};
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    uint64_t ack_deadline = now_ns() + 10000000000ull;
    while (amqp_queue_get_stats(q, &s) == AMQP_OK && s.acked < (uint64_t)n &&
           now_ns() < ack_deadline)
      sleep_us(1000);
    sleep_us(200000); /* anything beyond n would be a duplicate */
    amqp_queue_get_stats(q, &s);
    double secs = (t1 - t0) / 1e9;
    json_f("seconds", secs);
    json_f("msgs_per_s", n / secs);
    json_f("cpu_s", c1 - c0);
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_f("vol_ctx_switches_per_msg", (double)(v1 - v0) / (double)n);
    json_f("invol_ctx_switches_per_msg", (double)(i1 - i0) / (double)n);
    json_u("consumed", atomic_load(&st.count));
    json_u("acked", s.acked);
    json_u("bad_bodies", atomic_load(&st.bad));
    json_u("redelivered_released", s.released);
    if (g_err[0] == '\0' && (atomic_load(&st.count) != (uint64_t)n || s.acked != (uint64_t)n))
      set_errf("consumed %" PRIu64 ", acked %" PRIu64 " of %lld", (uint64_t)atomic_load(&st.count),
               s.acked, n);
    if (g_err[0] == '\0' && atomic_load(&st.bad) != 0)
      set_errf("%" PRIu64 " bodies of the wrong size", (uint64_t)atomic_load(&st.bad));
  }
  if (conn != 0) close_conn(conn);
  return finish();
}

/* ---- consume, pull mode ----------------------------------------------------------- */

static int mode_consume_pull(void) {
  long long n = arg_int("n", 200000), size = arg_int("size", 64);
  long long prefetch = arg_int("prefetch", 500), batch = arg_int("batch", 256);
  json_begin(CLIENT, "consume");
  json_s("api", "pull");
  json_i("n", n);
  json_i("size", size);
  json_i("prefetch", prefetch);
  json_i("batch", batch);
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  uint64_t count = 0, bad = 0, settle_failed = 0;
  const amqp_delivery **out = calloc((size_t)batch, sizeof *out);
  uint64_t *ids = calloc((size_t)batch, sizeof *ids);
  if (out != NULL && ids != NULL && open_queue(100000, 64ll << 20, 0, prefetch, &conn, &q) == 0) {
    double c0 = cpu_seconds();
    long long v0, i0, v1, i1;
    ctx_switches(&v0, &i0);
    uint64_t t0 = now_ns();
    amqp_result rc = amqp_consume_pull(q, NULL);
    if (rc != AMQP_OK) set_err("amqp_consume_pull", rc);
    uint64_t deadline = t0 + 300ull * 1000000000ull;
    while (g_err[0] == '\0' && count < (uint64_t)n) {
      size_t got = 0;
      rc = amqp_poll(q, out, (size_t)batch, 100, &got);
      if (rc == AMQP_ERR_TIMEOUT) {
        if (now_ns() > deadline) set_errf("consumed %" PRIu64 " of %lld after 300 s", count, n);
        continue;
      }
      if (rc != AMQP_OK) {
        set_err("amqp_poll", rc);
        break;
      }
      for (size_t i = 0; i < got; i++) {
        if (out[i]->body_len != (size_t)size) bad++;
        ids[i] = out[i]->delivery_id;
        amqp_delivery_free(out[i]);
      }
      if (amqp_settle_many(q, ids, got, AMQP_ACK, NULL) != AMQP_OK) settle_failed++;
      count += got;
    }
    uint64_t t1 = now_ns();
    double c1 = cpu_seconds();
    ctx_switches(&v1, &i1);
    amqp_queue_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    uint64_t ack_deadline = now_ns() + 10000000000ull;
    while (amqp_queue_get_stats(q, &s) == AMQP_OK && s.acked < (uint64_t)n &&
           now_ns() < ack_deadline)
      sleep_us(1000);
    sleep_us(200000); /* anything beyond n would be a duplicate */
    size_t extra = 0;
    if (amqp_poll(q, out, (size_t)batch, 0, &extra) == AMQP_OK) {
      for (size_t i = 0; i < extra; i++) amqp_delivery_free(out[i]);
      set_errf("%zu deliveries beyond n", extra);
    }
    amqp_queue_get_stats(q, &s);
    double secs = (t1 - t0) / 1e9;
    json_f("seconds", secs);
    json_f("msgs_per_s", n / secs);
    json_f("cpu_s", c1 - c0);
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_f("vol_ctx_switches_per_msg", (double)(v1 - v0) / (double)n);
    json_f("invol_ctx_switches_per_msg", (double)(i1 - i0) / (double)n);
    json_u("consumed", count);
    json_u("acked", s.acked);
    json_u("bad_bodies", bad);
    json_u("redelivered_released", s.released);
    if (g_err[0] == '\0' && (count != (uint64_t)n || s.acked != (uint64_t)n))
      set_errf("consumed %" PRIu64 ", acked %" PRIu64 " of %lld", count, s.acked, n);
    if (g_err[0] == '\0' && (bad != 0 || settle_failed != 0))
      set_errf("%" PRIu64 " bodies of the wrong size, %" PRIu64 " settle_many failures", bad,
               settle_failed);
  } else if (out == NULL || ids == NULL) {
    set_errf("out of memory");
  }
  free(out);
  free(ids);
  if (conn != 0) close_conn(conn);
  return finish();
}

/* ---- publish call latency -------------------------------------------------------- */

typedef struct {
  amqp_queue_handle q;
  size_t size;
  long long calls;
  long long warm; /* untimed publishes first, confirmed before the timed ones */
  uint64_t *lat;
  uint64_t failed;
  amqp_result first_rc;
  pthread_barrier_t *barrier;
} lat_thread;

static void *lat_run(void *arg) {
  lat_thread *t = arg;
  uint8_t *body = calloc(1, t->size + 16);
  /* Warm-up: the same publishes, untimed, so the timed ones see memory that
     a long-running process has already touched (not first-touch page faults
     of a buffer growing from nothing). */
  for (long long i = 0; i < t->warm; i++) {
    fill_body(body, t->size, (uint64_t)i, 0);
    (void)amqp_publish(t->q, body, t->size);
  }
  pthread_barrier_wait(t->barrier); /* warm-up sent */
  pthread_barrier_wait(t->barrier); /* ... and confirmed */
  for (long long i = 0; i < t->calls; i++) {
    fill_body(body, t->size, (uint64_t)i, 0);
    uint64_t a = now_ns();
    amqp_result rc = amqp_publish(t->q, body, t->size);
    uint64_t b = now_ns();
    t->lat[i] = b - a;
    if (rc != AMQP_OK) {
      if (t->failed++ == 0) t->first_rc = rc;
    }
  }
  free(body);
  return NULL;
}

static int mode_latency(void) {
  long long n = arg_int("n", 200000), size = arg_int("size", 64);
  int threads = (int)arg_int("threads", 1);
  long long per = n / threads;
  long long warm = arg_int("warmup", 0) / threads;
  n = per * threads;
  json_begin(CLIENT, "latency");
  json_i("n", n);
  json_i("warmup", warm * threads);
  json_i("size", size);
  json_i("threads", threads);
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  if (open_queue(n + warm * threads + 1000, (n + warm * threads) * size * 2 + (64ll << 20), 0, 100,
                 &conn, &q) == 0) {
    lat_thread *ts = calloc((size_t)threads, sizeof *ts);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    uint64_t *all = calloc((size_t)n, sizeof *all);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
      ts[i] = (lat_thread){q, (size_t)size, per, warm, all + (size_t)i * per, 0, AMQP_OK, &barrier};
      pthread_create(&tid[i], NULL, lat_run, &ts[i]);
    }
    amqp_queue_stats s = {.size = sizeof(amqp_queue_stats)};
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    pthread_barrier_wait(&barrier);
    if (warm > 0) (void)wait_confirmed(q, 300ull * 1000000000ull, &s);
    uint64_t warm_confirmed = s.confirmed;
    double c0 = cpu_seconds();
    pthread_barrier_wait(&barrier);
    uint64_t t0 = now_ns();
    uint64_t failed = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(tid[i], NULL);
      if (ts[i].failed != 0 && failed == 0) set_err("amqp_publish", ts[i].first_rc);
      failed += ts[i].failed;
    }
    uint64_t t_calls = now_ns();
    uint64_t t1 = wait_confirmed(q, 300ull * 1000000000ull, &s);
    s.confirmed -= warm_confirmed;
    double c1 = cpu_seconds();
    json_f("calls_seconds", (t_calls - t0) / 1e9);
    json_f("confirm_seconds", (t1 - t0) / 1e9);
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_u("failed_calls", failed);
    json_u("confirmed", s.confirmed);
    json_u("timer_overhead_ns", timer_overhead_ns());
    json_pcts("call", all, (size_t)n);
    if (g_err[0] == '\0' && s.confirmed != (uint64_t)n)
      set_errf("confirmed %" PRIu64 " of %lld", s.confirmed, n);
    free(all);
    free(ts);
    free(tid);
  }
  if (conn != 0) close_conn(conn);
  return finish();
}

/* ---- end-to-end latency ---------------------------------------------------------------- */

typedef struct {
  uint64_t *lat; /* by sequence number; 0 = not received */
  uint64_t total;
  atomic_uint_fast64_t received;
  atomic_uint_fast64_t dups;
  atomic_uint_fast64_t bad;
} e2e_state;

static amqp_disposition on_e2e(const amqp_delivery *d, void *ud) {
  uint64_t now = now_ns();
  e2e_state *st = ud;
  uint64_t seq, ts;
  if (d->body_len < 16) {
    atomic_fetch_add(&st->bad, 1);
    return AMQP_ACK;
  }
  memcpy(&seq, d->body, 8);
  memcpy(&ts, d->body + 8, 8);
  if (seq >= st->total) {
    atomic_fetch_add(&st->bad, 1);
  } else if (st->lat[seq] != 0) {
    atomic_fetch_add(&st->dups, 1);
  } else {
    st->lat[seq] = now - ts + 1; /* +1: never 0; taken off below */
    atomic_fetch_add(&st->received, 1);
  }
  return AMQP_ACK;
}

static int mode_e2e(void) {
  long long rate = arg_int("rate", 10000), seconds = arg_int("seconds", 5);
  long long size = arg_int("size", 64), warm = arg_int("warmup", 200);
  long long n = rate * seconds;
  if (size < 16) size = 16;
  pace_init();
  json_begin(CLIENT, "e2e");
  json_i("rate", rate);
  json_i("n", n);
  json_i("size", size);
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  static e2e_state st;
  st.total = (uint64_t)(warm + n);
  st.lat = calloc(st.total, sizeof *st.lat);
  int durable = (int)arg_int("durable", 0);
  json_b("durable", durable);
  if (open_queue(100000, 64ll << 20, durable, arg_int("prefetch", 500), &conn, &q) == 0) {
    amqp_result rc = amqp_consume(q, on_e2e, &st, 1);
    if (rc != AMQP_OK) set_err("amqp_consume", rc);
    uint8_t *body = calloc(1, (size_t)size);
    uint64_t period = 1000000000ull / (uint64_t)rate, max_lag = 0;
    /* warm-up (not measured): the consumer is registered and delivering */
    for (long long i = 0; i < warm && g_err[0] == '\0'; i++) {
      fill_body(body, (size_t)size, (uint64_t)i, now_ns());
      if ((rc = amqp_publish(q, body, (size_t)size)) != AMQP_OK) set_err("amqp_publish", rc);
      sleep_us((long)(period / 1000));
    }
    uint64_t wdl = now_ns() + 20000000000ull;
    while (atomic_load(&st.received) < (uint64_t)warm && now_ns() < wdl) sleep_us(1000);
    if (atomic_load(&st.received) < (uint64_t)warm) set_errf("warm-up messages not received");
    double c0 = cpu_seconds();
    uint64_t t0 = now_ns() + 1000000;
    for (long long i = 0; i < n && g_err[0] == '\0'; i++) {
      uint64_t target = t0 + (uint64_t)i * period;
      sleep_until_ns(target);
      uint64_t t = now_ns();
      if (t - target > max_lag) max_lag = t - target;
      fill_body(body, (size_t)size, (uint64_t)(warm + i), t);
      if ((rc = amqp_publish(q, body, (size_t)size)) != AMQP_OK) set_err("amqp_publish", rc);
    }
    uint64_t t_end = now_ns();
    uint64_t dl = now_ns() + 30000000000ull;
    while (atomic_load(&st.received) < st.total && now_ns() < dl) sleep_us(1000);
    double c1 = cpu_seconds();
    uint64_t got = atomic_load(&st.received) - (uint64_t)warm;
    uint64_t *v = calloc((size_t)n, sizeof *v);
    size_t k = 0;
    for (uint64_t i = (uint64_t)warm; i < st.total; i++)
      if (st.lat[i] != 0) v[k++] = st.lat[i] - 1;
    json_f("seconds", (t_end - t0) / 1e9);
    json_f("achieved_rate", n / ((t_end - t0) / 1e9));
    json_u("received", got);
    json_u("duplicates", atomic_load(&st.dups));
    json_u("max_send_lag_ns", max_lag);
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_pcts("e2e", v, k);
    if (g_err[0] == '\0' && got != (uint64_t)n) set_errf("received %" PRIu64 " of %lld", got, n);
    if (g_err[0] == '\0' && atomic_load(&st.bad) != 0) set_errf("malformed bodies");
    free(v);
    free(body);
  }
  if (conn != 0) close_conn(conn);
  return finish();
}

/* ---- memory with the broker unreachable ---------------------------------------------------- */

/* a local port nobody listens on: bind an ephemeral port, then close it */
static int dead_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    if (fd >= 0) close(fd);
    return 1; /* tcpmux: nothing listens there on a normal machine */
  }
  close(fd);
  return ntohs(a.sin_port);
}

static int mode_memory(void) {
  long long n = arg_int("n", 1000000), size = arg_int("size", 64);
  json_begin(CLIENT, "memory");
  json_i("n", n);
  json_i("size", size);
  char uri[128], copts[256];
  int port = dead_port();
  snprintf(uri, sizeof uri, "amqp://guest:guest@127.0.0.1:%d/%%2f", port);
  snprintf(copts, sizeof copts, "max_buffered=%lld&max_buffered_bytes=%lld&reconnect_delay_ms=500",
           2 * n, n * size * 4 + (64ll << 20));
  amqp_connection_handle conn = 0;
  amqp_queue_handle q = 0;
  amqp_result rc = amqp_connect(uri, copts, &conn);
  if (rc != AMQP_OK) {
    set_err("amqp_connect", rc);
    conn = 0;
  } else if ((rc = amqp_queue_open(conn, "bench.memory", NULL, NULL,
                                   "durable=false&persistent=false", &q)) != AMQP_OK) {
    set_err("amqp_queue_open", rc);
  } else {
    uint8_t *body = calloc(1, (size_t)size + 16);
    sleep_us(100000);
    long rss0 = proc_status_kb("VmRSS");
    double c0 = cpu_seconds();
    uint64_t t0 = now_ns();
    for (long long i = 0; i < n && g_err[0] == '\0'; i++) {
      fill_body(body, (size_t)size, (uint64_t)i, 0);
      if ((rc = amqp_publish(q, body, (size_t)size)) != AMQP_OK) set_err("amqp_publish", rc);
    }
    uint64_t t1 = now_ns();
    double c1 = cpu_seconds();
    long rss1 = proc_status_kb("VmRSS");
    amqp_queue_stats s = {.size = sizeof(amqp_queue_stats)};
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    amqp_queue_get_stats(q, &s);
    amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
    memset(&cs, 0, sizeof cs);
    cs.size = sizeof cs;
    amqp_connection_get_stats(conn, &cs);
    uint64_t unsent = 0;
    rc = amqp_close_graceful(conn, 0, &unsent);
    conn = 0;
    sleep_us(200000);
    long rss2 = proc_status_kb("VmRSS");
    malloc_trim(0); /* freed but kept by malloc, or still held? */
    long rss3 = proc_status_kb("VmRSS");
    json_i("dead_port", port);
    json_s("state", amqp_connection_state_str(cs.state));
    json_i("rss_before_kb", rss0);
    json_i("rss_after_kb", rss1);
    json_i("rss_after_close_kb", rss2);
    json_i("rss_after_trim_kb", rss3);
    json_f("growth_mb", (rss1 - rss0) / 1024.0);
    json_f("bytes_per_msg", (rss1 - rss0) * 1024.0 / (double)n);
    json_u("buffered", s.buffered);
    json_u("buffered_bytes", s.buffered_bytes);
    json_f("calls_seconds", (t1 - t0) / 1e9);
    json_f("calls_per_s", n / ((t1 - t0) / 1e9));
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_s("close_result", amqp_result_str(rc));
    json_u("unsent", unsent);
    if (g_err[0] == '\0' && s.buffered != (uint64_t)n)
      set_errf("buffered %" PRIu64 " of %lld", s.buffered, n);
    if (g_err[0] == '\0' && cs.state == AMQP_STATE_CONNECTED)
      set_errf("connected to the dead port %d?", port);
    if (g_err[0] == '\0' && (rc != AMQP_ERR_TIMEOUT || unsent != (uint64_t)n))
      set_errf("close: %s, unsent %" PRIu64 " (expected TIMEOUT, %lld)", amqp_result_str(rc),
               unsent, n);
    free(body);
  }
  if (conn != 0) amqp_close_graceful(conn, 0, NULL);
  return finish();
}

/* ---- many producer threads: T threads on one connection, to Q queues ------------------------ */

/* threads uri queue n size threads queues: `threads` threads publish n messages in all, thread
 * i to queue `queue`.(i % queues), over one connection; the time from the first call to the
 * last confirm (rate) and every call's duration */
static int mode_threads(void) {
  long long n = arg_int("n", 200000), size = arg_int("size", 64);
  int threads = (int)arg_int("threads", 8), queues = (int)arg_int("queues", 1);
  if (threads < 1 || queues < 1 || queues > threads) {
    fprintf(stderr, "ours threads: need 1 <= queues <= threads\n");
    return 2;
  }
  long long per = n / threads;
  n = per * threads;
  json_begin(CLIENT, "threads");
  json_i("n", n);
  json_i("size", size);
  json_i("threads", threads);
  json_i("queues", queues);
  char copts[256], qopts[256], name[256];
  snprintf(copts, sizeof copts, "max_buffered=%lld&max_buffered_bytes=%lld", n + 1000,
           n * size * 2 + (64ll << 20));
  amqp_connection_handle conn = 0;
  amqp_queue_handle *qs = calloc((size_t)queues, sizeof *qs);
  amqp_result rc = amqp_connect(arg_str("uri", ""), copts, &conn);
  if (rc == AMQP_OK) rc = amqp_wait_connected(conn, 20000);
  for (int k = 0; k < queues && rc == AMQP_OK; k++) {
    snprintf(name, sizeof name, "%s.%d", arg_str("queue", "bench"), k);
    rc = amqp_queue_open(conn, name, NULL, NULL, queue_options(0, 100, qopts, sizeof qopts), &qs[k]);
  }
  if (rc != AMQP_OK) {
    set_err("connect / amqp_queue_open", rc);
  } else {
    lat_thread *ts = calloc((size_t)threads, sizeof *ts);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    uint64_t *all = calloc((size_t)n, sizeof *all);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
      ts[i] = (lat_thread){qs[i % queues], (size_t)size, per, 0, all + (size_t)i * per, 0, AMQP_OK,
                           &barrier};
      pthread_create(&tid[i], NULL, lat_run, &ts[i]);
    }
    pthread_barrier_wait(&barrier); /* (no warm-up) */
    double c0 = cpu_seconds();
    pthread_barrier_wait(&barrier);
    uint64_t t0 = now_ns(), failed = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(tid[i], NULL);
      if (ts[i].failed != 0 && failed == 0) set_err("amqp_publish", ts[i].first_rc);
      failed += ts[i].failed;
    }
    uint64_t t1 = t0, confirmed = 0;
    for (int k = 0; k < queues; k++) {
      amqp_queue_stats s;
      memset(&s, 0, sizeof s);
      s.size = sizeof s;
      t1 = wait_confirmed(qs[k], 300ull * 1000000000ull, &s);
      confirmed += s.confirmed;
    }
    double c1 = cpu_seconds();
    json_f("seconds", (t1 - t0) / 1e9);
    json_f("msgs_per_s", (double)n / ((t1 - t0) / 1e9));
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_u("failed_calls", failed);
    json_u("confirmed", confirmed);
    json_pcts("call", all, (size_t)n);
    if (g_err[0] == '\0' && confirmed != (uint64_t)n)
      set_errf("confirmed %" PRIu64 " of %lld", confirmed, n);
    free(all);
    free(ts);
    free(tid);
  }
  if (conn != 0) close_conn(conn);
  free(qs);
  return finish();
}

/* ---- many queues ------------------------------------------------------------------------ */

/* many: `queues` queues (QUEUE.0 .. QUEUE.K-1, non-durable, prefetch `prefetch`) on one
 * connection. Publish phase (timed): n/queues messages to each, round robin, until all are
 * confirmed. Consume phase (timed): amqp_consume repeat 1 on every queue (one consumer each),
 * callback returns AMQP_ACK, until n were called back. Threads and RSS while consuming. */
static int mode_many(void) {
  long long nq = arg_int("queues", 10), size = arg_int("size", 64);
  long long prefetch = arg_int("prefetch", 100);
  long long per = arg_int("n", 100000) / nq, n = per * nq;
  const char *prefix = arg_str("queue", "bench");
  json_begin(CLIENT, "many");
  json_i("queues", nq);
  json_i("n", n);
  json_i("size", size);
  json_i("prefetch", prefetch);
  json_b("mandatory", (int)arg_int("mandatory", 1));
  amqp_connection_handle conn = 0;
  amqp_queue_handle *qs = calloc((size_t)nq, sizeof *qs);
  static consume_state st;
  st.n = (uint64_t)n;
  st.size = (size_t)size;
  char copts[256], qopts[256], name[256];
  snprintf(copts, sizeof copts, "max_buffered=%lld&max_buffered_bytes=%lld", n + 1000,
           (n + 1000) * (size + 64));
  amqp_result rc = amqp_connect(arg_str("uri", ""), copts, &conn);
  if (rc == AMQP_OK) rc = amqp_wait_connected(conn, 20000);
  if (rc != AMQP_OK) set_err("amqp_connect", rc);
  long threads_idle = proc_status_kb("Threads");
  for (long long j = 0; j < nq && g_err[0] == '\0'; j++) {
    snprintf(name, sizeof name, "%s.%lld", prefix, j);
    rc = amqp_queue_open(conn, name, NULL, NULL, queue_options(0, prefetch, qopts, sizeof qopts),
                         &qs[j]);
    if (rc != AMQP_OK) set_err("amqp_queue_open", rc);
  }
  long threads_open = proc_status_kb("Threads");
  if (g_err[0] == '\0') {
    uint8_t *body = calloc(1, (size_t)size + 16);
    double c0 = cpu_seconds();
    uint64_t t0 = now_ns();
    for (long long i = 0; i < per && g_err[0] == '\0'; i++) {
      for (long long j = 0; j < nq && g_err[0] == '\0'; j++) {
        fill_body(body, (size_t)size, (uint64_t)(i * nq + j), 0);
        rc = amqp_publish_wait(qs[j], body, (size_t)size, 60000);
        if (rc != AMQP_OK) set_err("amqp_publish_wait", rc);
      }
    }
    amqp_queue_stats s;
    uint64_t confirmed = 0, t1 = t0;
    for (long long j = 0; j < nq && g_err[0] == '\0'; j++) {
      memset(&s, 0, sizeof s);
      s.size = sizeof s;
      t1 = wait_confirmed(qs[j], 300ull * 1000000000ull, &s);
      confirmed += s.confirmed;
    }
    double c1 = cpu_seconds();
    json_f("pub_seconds", (t1 - t0) / 1e9);
    json_f("pub_msgs_per_s", n / ((t1 - t0) / 1e9));
    json_f("pub_cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_u("confirmed", confirmed);
    if (g_err[0] == '\0' && confirmed != (uint64_t)n)
      set_errf("confirmed %" PRIu64 " of %lld", confirmed, n);
    free(body);
  }
  if (g_err[0] == '\0') {
    double c0 = cpu_seconds();
    uint64_t t0 = now_ns();
    for (long long j = 0; j < nq && g_err[0] == '\0'; j++) {
      rc = amqp_consume(qs[j], on_consume, &st, 1);
      if (rc != AMQP_OK) set_err("amqp_consume", rc);
    }
    uint64_t deadline = t0 + 300ull * 1000000000ull;
    long threads_max = 0;
    while (g_err[0] == '\0' && atomic_load(&st.count) < (uint64_t)n) {
      if (now_ns() > deadline) {
        set_errf("consumed %" PRIu64 " of %lld after 300 s", (uint64_t)atomic_load(&st.count), n);
        break;
      }
      long t = proc_status_kb("Threads");
      if (t > threads_max) threads_max = t;
      sleep_us(1000);
    }
    double c1 = cpu_seconds();
    uint64_t t1 = atomic_load(&st.t_last);
    if (t1 == 0) t1 = now_ns();
    long t = proc_status_kb("Threads");
    if (t > threads_max) threads_max = t;
    uint64_t acked = 0, ack_deadline = now_ns() + 10000000000ull;
    for (long long j = 0; j < nq; j++) {
      amqp_queue_stats s;
      memset(&s, 0, sizeof s);
      s.size = sizeof s;
      while (amqp_queue_get_stats(qs[j], &s) == AMQP_OK && s.acked < (uint64_t)per &&
             now_ns() < ack_deadline)
        sleep_us(1000);
      acked += s.acked;
    }
    json_f("seconds", (t1 - t0) / 1e9);
    json_f("msgs_per_s", n / ((t1 - t0) / 1e9));
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_u("consumed", atomic_load(&st.count));
    json_u("acked", acked);
    json_i("threads_before_queues", threads_idle);
    json_i("threads_queues_open", threads_open);
    json_i("threads_consuming", threads_max);
    json_i("rss_kb", proc_status_kb("VmRSS"));
    json_i("rss_peak_kb", proc_status_kb("VmHWM"));
    if (g_err[0] == '\0' && (atomic_load(&st.count) != (uint64_t)n || acked != (uint64_t)n))
      set_errf("consumed %" PRIu64 ", acked %" PRIu64 " of %lld", (uint64_t)atomic_load(&st.count),
               acked, n);
  }
  if (conn != 0) close_conn(conn);
  free(qs);
  return finish();
}

int main(int argc, char **argv) {
  g_argc = argc;
  g_argv = argv;
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "publish") == 0) return mode_publish();
  if (strcmp(mode, "consume") == 0) return mode_consume();
  if (strcmp(mode, "consume_pull") == 0) return mode_consume_pull();
  if (strcmp(mode, "latency") == 0) return mode_latency();
  if (strcmp(mode, "e2e") == 0) return mode_e2e();
  if (strcmp(mode, "memory") == 0) return mode_memory();
  if (strcmp(mode, "threads") == 0) return mode_threads();
  if (strcmp(mode, "many") == 0) return mode_many();
  fprintf(stderr, "usage: ours publish|consume|consume_pull|latency|e2e|memory|threads|many key=value...\n");
  return 2;
}
