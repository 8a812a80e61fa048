/* rmqc.c -- benchmark driver for rabbitmq-c (librabbitmq 0.11), doing the same work as
 * bench/ours.c, plus the untimed helpers bench.sh needs (fill, delete, count).
 *
 *   rmqc MODE key=value...
 *
 * Modes (each prints one JSON line on stdout, see bench/common.h):
 *   publish  uri queue n size durable window  publisher confirms, STREAMING: up to `window`
 *                                             publishes outstanding; basic.ack frames
 *                                             (multiple or not) are read as they come;
 *                                             timed from the first publish to the last confirm
 *   consume  uri queue n size prefetch        basic.qos, basic.consume, then
 *                                             amqp_consume_message + amqp_basic_ack per message
 *   latency  uri queue n threads size window  the time of each amqp_basic_publish call (it
 *                                             writes to the socket); one connection per thread
 *   e2e      uri queue rate seconds size [durable]  one publisher (connection A, confirms streamed)
 *                                             and one consumer thread (connection B) in this
 *                                             process; publish -> delivery latency
 *   fill     uri queue n size durable         (untimed) declare + publish n confirmed messages
 *   delete   uri queue                        (untimed) delete the queue
 *   count    uri queue                        (untimed) passive declare: message_count
 *   threads  uri queue n size threads queues  `threads` threads share ONE connection under a
 *                                             mutex (rabbitmq-c is not thread-safe: what C
 *                                             users do), thread i publishing to queue
 *                                             QUEUE.(i % queues) on channel (i % queues)+1;
 *                                             confirms streamed (window per channel) under the
 *                                             same lock; a call = lock + publish + unlock
 *   many     uri queue queues n size prefetch  ours' `many` on one connection, a channel per
 *                                             queue (see mode_many)
 *   delete_many uri queue queues              (untimed) delete QUEUE.0..K-1, print messages
 * Common keys: test=LABEL run=K (copied into the JSON line).
 * An amqps:// uri connects with TLS (amqp_ssl_socket, OpenSSL; peer and host name verified);
 * its query's cacertfile=PATH is the CA to trust (the same uri as ours takes).
 */
#define _GNU_SOURCE 1

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <pthread.h>
#include <stdatomic.h>

#define BENCH_PROG "rmqc"
#include "common.h"

static const char *CLIENT = "rabbitmq-c";

/* 0 when the last RPC went well, else records why */
static int rpc_ok(amqp_connection_state_t c, const char *what) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
  switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return 0;
    case AMQP_RESPONSE_NONE:
      set_errf("%s: missing RPC reply", what);
      break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      set_errf("%s: %s", what, amqp_error_string2(r.library_error));
      break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = r.reply.decoded;
        set_errf("%s: connection closed by the broker: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
      } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        amqp_channel_close_t *m = r.reply.decoded;
        set_errf("%s: channel closed by the broker: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (char *)m->reply_text.bytes);
      } else {
        set_errf("%s: broker error, method 0x%08X", what, r.reply.id);
      }
      break;
  }
  return -1;
}

/* connects to the `uri` key, logs in, opens channel 1; NULL on failure */
static amqp_connection_state_t rconnect(void) {
  char *url = strdup(arg_str("uri", "amqp://guest:guest@127.0.0.1:5672/%2f"));
  /* amqps://...?cacertfile=PATH, the URI ours takes: rabbitmq-c's parser knows no query */
  const char *cacert = NULL;
  char *query = strchr(url, '?');
  if (query != NULL) {
    *query = '\0';
    char *k = strstr(query + 1, "cacertfile=");
    if (k != NULL) {
      cacert = k + strlen("cacertfile=");
      char *amp = strchr(k, '&');
      if (amp != NULL) *amp = '\0';
    }
  }
  struct amqp_connection_info ci;
  amqp_default_connection_info(&ci);
  if (amqp_parse_url(url, &ci) != AMQP_STATUS_OK) {
    set_errf("bad uri");
    free(url);
    return NULL;
  }
  amqp_connection_state_t c = amqp_new_connection();
  /* amqps: OpenSSL, peer and host name verified (rabbitmq-c's defaults) */
  amqp_socket_t *s = ci.ssl ? amqp_ssl_socket_new(c) : amqp_tcp_socket_new(c);
  int st = s ? AMQP_STATUS_OK : AMQP_STATUS_NO_MEMORY;
  if (st == AMQP_STATUS_OK && ci.ssl && cacert != NULL) st = amqp_ssl_socket_set_cacert(s, cacert);
  if (st == AMQP_STATUS_OK) st = amqp_socket_open(s, ci.host, ci.port);
  if (st != AMQP_STATUS_OK) {
    set_errf("connect %s:%d: %s", ci.host, ci.port, amqp_error_string2(st));
    amqp_destroy_connection(c);
    free(url);
    return NULL;
  }
  amqp_rpc_reply_t r = amqp_login(c, ci.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci.user,
                                  ci.password);
  free(url);
  if (r.reply_type != AMQP_RESPONSE_NORMAL) {
    set_errf("login failed (reply type %d)", (int)r.reply_type);
    amqp_destroy_connection(c);
    return NULL;
  }
  amqp_channel_open(c, 1);
  if (rpc_ok(c, "channel.open") != 0) {
    amqp_destroy_connection(c);
    return NULL;
  }
  return c;
}

static void rclose(amqp_connection_state_t c) {
  if (c == NULL) return;
  amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(c, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(c);
}

/* the same attributes as amqp_queue_open(durable=..): not exclusive, not auto-delete */
static int declare(amqp_connection_state_t c, int durable) {
  amqp_queue_declare(c, 1, amqp_cstring_bytes(arg_str("queue", "bench")), 0, durable, 0, 0,
                     amqp_empty_table);
  return rpc_ok(c, "queue.declare");
}

/* ---- confirmed publisher with streaming confirms --------------------------------------- */

typedef struct {
  amqp_connection_state_t c;
  uint64_t published; /* delivery tags 1..published were sent */
  uint64_t settled;   /* acked + nacked */
  uint64_t acked, nacked;
  uint64_t low;       /* every tag below `low` is settled */
  uint8_t *done;      /* by tag */
  uint64_t cap;
  uint64_t window;
  amqp_basic_properties_t props;
  int persistent;
  int mandatory;
} publisher;

static void pub_init(publisher *p, amqp_connection_state_t c, uint64_t n, int persistent) {
  memset(p, 0, sizeof *p);
  p->c = c;
  p->cap = n + 2;
  p->done = calloc(p->cap, 1);
  p->low = 1;
  p->window = (uint64_t)arg_int("window", 512);
  p->persistent = persistent;
  p->mandatory = (int)arg_int("mandatory", 0);
  /* like ours: delivery mode 2 when persistent, no properties at all otherwise */
  p->props._flags = persistent ? AMQP_BASIC_DELIVERY_MODE_FLAG : 0;
  p->props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
}

static void settle_one(publisher *p, uint64_t tag, int nack) {
  if (tag == 0 || tag >= p->cap || p->done[tag]) return;
  p->done[tag] = 1;
  p->settled++;
  if (nack)
    p->nacked++;
  else
    p->acked++;
}

static void settle(publisher *p, uint64_t tag, int multiple, int nack) {
  if (multiple) {
    for (uint64_t t = p->low; t <= tag && t < p->cap; t++) settle_one(p, t, nack);
  } else {
    settle_one(p, tag, nack);
  }
  while (p->low < p->cap && p->done[p->low]) p->low++;
}

static int pub_frame(publisher *p, amqp_frame_t *f) {
  if (f->frame_type != AMQP_FRAME_METHOD) return 0; /* heartbeats are off */
  switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
      amqp_basic_ack_t *a = f->payload.method.decoded;
      settle(p, a->delivery_tag, a->multiple, 0);
      return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
      amqp_basic_nack_t *a = f->payload.method.decoded;
      settle(p, a->delivery_tag, a->multiple, 1);
      return 0;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
      amqp_channel_close_t *m = f->payload.method.decoded;
      set_errf("channel closed by the broker: %u %.*s", m->reply_code, (int)m->reply_text.len,
               (char *)m->reply_text.bytes);
      return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD:
      set_errf("connection closed by the broker");
      return -1;
    default:
      return 0;
  }
}

/* reads confirms: blocking for one frame if `block`, then whatever is already buffered
 * (when `poll_socket`, also what the socket has, without waiting) */
static int pub_drain(publisher *p, int block, int poll_socket) {
  amqp_frame_t f;
  struct timeval tv0 = {0, 0};
  for (;;) {
    int r;
    if (block) {
      r = amqp_simple_wait_frame(p->c, &f);
      block = 0;
    } else if (poll_socket || amqp_frames_enqueued(p->c) || amqp_data_in_buffer(p->c)) {
      r = amqp_simple_wait_frame_noblock(p->c, &f, &tv0);
      if (r == AMQP_STATUS_TIMEOUT) break;
    } else {
      break;
    }
    if (r != AMQP_STATUS_OK) {
      set_errf("reading confirms: %s", amqp_error_string2(r));
      return -1;
    }
    if (pub_frame(p, &f) != 0) return -1;
  }
  if (!amqp_frames_enqueued(p->c)) amqp_maybe_release_buffers(p->c);
  return 0;
}

/* one publish, reading confirms when the window is full (or every 64 publishes);
 * *call_ns receives the duration of the amqp_basic_publish call itself */
static int pub_send(publisher *p, const void *body, size_t len, uint64_t *call_ns) {
  while (p->published - p->settled >= p->window) {
    if (pub_drain(p, 1, 0) != 0) return -1;
  }
  amqp_bytes_t b = {len, (void *)body};
  const char *q = arg_str("queue", "bench");
  uint64_t a = call_ns ? now_ns() : 0;
  int r = amqp_basic_publish(p->c, 1, amqp_empty_bytes, amqp_cstring_bytes(q), p->mandatory, 0,
                             &p->props, b);
  if (call_ns) *call_ns = now_ns() - a;
  if (r != AMQP_STATUS_OK) {
    set_errf("amqp_basic_publish: %s", amqp_error_string2(r));
    return -1;
  }
  p->published++;
  if ((p->published & 63) == 0) return pub_drain(p, 0, 1);
  return 0;
}

static int pub_wait_all(publisher *p, uint64_t timeout_ns) {
  uint64_t deadline = now_ns() + timeout_ns;
  while (p->settled < p->published) {
    struct timeval tv = {1, 0};
    amqp_frame_t f;
    int r = amqp_simple_wait_frame_noblock(p->c, &f, &tv);
    if (r == AMQP_STATUS_TIMEOUT) {
      if (now_ns() > deadline) {
        set_errf("%" PRIu64 " publishes not confirmed", p->published - p->settled);
        return -1;
      }
      continue;
    }
    if (r != AMQP_STATUS_OK) {
      set_errf("reading confirms: %s", amqp_error_string2(r));
      return -1;
    }
    if (pub_frame(p, &f) != 0) return -1;
    if (pub_drain(p, 0, 0) != 0) return -1;
  }
  return 0;
}

static int confirm_select(amqp_connection_state_t c) {
  amqp_confirm_select(c, 1);
  return rpc_ok(c, "confirm.select");
}

/* ---- publish / fill ----------------------------------------------------------------------- */

static int mode_publish(const char *mode) {
  long long n = arg_int("n", 200000), size = arg_int("size", 64);
  int durable = (int)arg_int("durable", 0);
  json_begin(CLIENT, mode);
  json_i("n", n);
  json_i("size", size);
  json_b("durable", durable);
  json_b("mandatory", (int)arg_int("mandatory", 0));
  json_i("window", arg_int("window", 512));
  int props = (int)arg_int("props", 0);
  json_b("props", props);
  amqp_connection_state_t c = rconnect();
  publisher p;
  memset(&p, 0, sizeof p);
  /* pub_props_64: the same five string properties and three headers as ours.c */
  static const char traceparent[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  amqp_table_entry_t entries[3];
  char id[32];
  if (c != NULL && declare(c, durable) == 0 && confirm_select(c) == 0) {
    pub_init(&p, c, (uint64_t)n, durable);
    if (props) {
      entries[0].key = amqp_cstring_bytes("traceparent");
      entries[0].value.kind = AMQP_FIELD_KIND_UTF8;
      entries[0].value.value.bytes = amqp_cstring_bytes(traceparent);
      entries[1].key = amqp_cstring_bytes("tenant");
      entries[1].value.kind = AMQP_FIELD_KIND_UTF8;
      entries[1].value.value.bytes = amqp_cstring_bytes("acme");
      entries[2].key = amqp_cstring_bytes("attempt");
      entries[2].value.kind = AMQP_FIELD_KIND_I64;
      entries[2].value.value.i64 = 1;
      p.props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
                        AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_APP_ID_FLAG |
                        AMQP_BASIC_HEADERS_FLAG;
      p.props.content_type = amqp_cstring_bytes("application/json");
      p.props.correlation_id = amqp_cstring_bytes("corr-0123456789");
      p.props.type = amqp_cstring_bytes("order.created");
      p.props.app_id = amqp_cstring_bytes("bench");
      p.props.headers.num_entries = 3;
      p.props.headers.entries = entries;
    }
    uint8_t *body = calloc(1, (size_t)size + 16);
    double c0 = cpu_seconds();
    uint64_t t0 = now_ns();
    for (long long i = 0; i < n; i++) {
      fill_body(body, (size_t)size, (uint64_t)i, 0);
      if (props) {
        snprintf(id, sizeof id, "msg-%lld", i);
        p.props.message_id = amqp_cstring_bytes(id);
      }
      if (pub_send(&p, body, (size_t)size, NULL) != 0) break;
    }
    if (g_err[0] == '\0') pub_wait_all(&p, 300ull * 1000000000ull);
    uint64_t t1 = now_ns();
    double c1 = cpu_seconds();
    double secs = (t1 - t0) / 1e9;
    json_f("seconds", secs);
    json_f("msgs_per_s", n / secs);
    json_f("cpu_s", c1 - c0);
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_u("confirmed", p.acked);
    json_u("nacked", p.nacked);
    json_i("rss_peak_kb", proc_status_kb("VmHWM"));
    if (g_err[0] == '\0' && p.acked != (uint64_t)n)
      set_errf("confirmed %" PRIu64 " of %lld (%" PRIu64 " nacked)", p.acked, n, p.nacked);
    free(body);
    free(p.done);
  }
  rclose(c);
  return finish();
}

/* ---- consume --------------------------------------------------------------------------------- */

static int mode_consume(void) {
  long long n = arg_int("n", 200000), size = arg_int("size", 64);
  long long prefetch = arg_int("prefetch", 500);
  json_begin(CLIENT, "consume");
  json_i("n", n);
  json_i("size", size);
  json_i("prefetch", prefetch);
  amqp_connection_state_t c = rconnect();
  if (c != NULL && declare(c, 0) == 0) {
    uint64_t got = 0, bad = 0;
    double c0 = cpu_seconds();
    long long v0, i0, v1, i1;
    ctx_switches(&v0, &i0);
    uint64_t t0 = now_ns();
    amqp_basic_qos(c, 1, 0, (uint16_t)prefetch, 0);
    if (rpc_ok(c, "basic.qos") == 0) {
      amqp_basic_consume(c, 1, amqp_cstring_bytes(arg_str("queue", "bench")), amqp_empty_bytes, 0,
                         0, 0, amqp_empty_table);
      if (rpc_ok(c, "basic.consume") == 0) {
        struct timeval tv = {30, 0};
        while (got < (uint64_t)n) {
          amqp_envelope_t env;
          amqp_maybe_release_buffers(c);
          amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
          if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            set_errf("amqp_consume_message after %" PRIu64 " messages: reply type %d, %s", got,
                     (int)r.reply_type, amqp_error_string2(r.library_error));
            break;
          }
          if (env.message.body.len != (size_t)size) bad++;
          int a = amqp_basic_ack(c, 1, env.delivery_tag, 0);
          amqp_destroy_envelope(&env);
          if (a != AMQP_STATUS_OK) {
            set_errf("amqp_basic_ack: %s", amqp_error_string2(a));
            break;
          }
          got++;
        }
      }
    }
    uint64_t t1 = now_ns();
    double c1 = cpu_seconds();
    ctx_switches(&v1, &i1);
    double secs = (t1 - t0) / 1e9;
    json_f("seconds", secs);
    json_f("msgs_per_s", n / secs);
    json_f("cpu_s", c1 - c0);
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_f("vol_ctx_switches_per_msg", (double)(v1 - v0) / (double)n);
    json_f("invol_ctx_switches_per_msg", (double)(i1 - i0) / (double)n);
    json_u("consumed", got);
    json_u("bad_bodies", bad);
    if (g_err[0] == '\0' && bad != 0) set_errf("%" PRIu64 " bodies of the wrong size", bad);
  }
  rclose(c);
  return finish();
}

/* ---- amqp_basic_publish call latency ------------------------------------------------------------ */

typedef struct {
  long long calls;
  size_t size;
  uint64_t *lat;
  uint64_t confirmed;
  pthread_barrier_t *barrier;
  int failed;
} lat_thread;

static pthread_mutex_t g_err_lock = PTHREAD_MUTEX_INITIALIZER;

static void *lat_run(void *arg) {
  lat_thread *t = arg;
  amqp_connection_state_t c = NULL;
  publisher p;
  memset(&p, 0, sizeof p);
  pthread_mutex_lock(&g_err_lock); /* set_errf is not thread-safe; setup is serialised */
  c = rconnect();
  int ok = c != NULL && declare(c, 0) == 0 && confirm_select(c) == 0;
  pthread_mutex_unlock(&g_err_lock);
  if (ok) pub_init(&p, c, (uint64_t)t->calls, 0);
  pthread_barrier_wait(t->barrier);
  if (!ok) {
    t->failed = 1;
    rclose(c);
    return NULL;
  }
  uint8_t *body = calloc(1, t->size + 16);
  for (long long i = 0; i < t->calls; i++) {
    fill_body(body, t->size, (uint64_t)i, 0);
    if (pub_send(&p, body, t->size, &t->lat[i]) != 0) {
      t->failed = 1;
      break;
    }
  }
  if (!t->failed && pub_wait_all(&p, 300ull * 1000000000ull) != 0) t->failed = 1;
  t->confirmed = p.acked;
  free(body);
  free(p.done);
  rclose(c);
  return NULL;
}

static int mode_latency(void) {
  long long n = arg_int("n", 200000), size = arg_int("size", 64);
  int threads = (int)arg_int("threads", 1);
  long long per = n / threads;
  n = per * threads;
  json_begin(CLIENT, "latency");
  json_i("n", n);
  json_i("size", size);
  json_i("threads", threads);
  json_i("window", arg_int("window", 512));
  lat_thread *ts = calloc((size_t)threads, sizeof *ts);
  pthread_t *tid = calloc((size_t)threads, sizeof *tid);
  uint64_t *all = calloc((size_t)n, sizeof *all);
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1);
  for (int i = 0; i < threads; i++) {
    ts[i] = (lat_thread){per, (size_t)size, all + (size_t)i * per, 0, &barrier, 0};
    pthread_create(&tid[i], NULL, lat_run, &ts[i]);
  }
  pthread_barrier_wait(&barrier);
  double c0 = cpu_seconds();
  uint64_t t0 = now_ns();
  uint64_t confirmed = 0;
  int failed = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(tid[i], NULL);
    confirmed += ts[i].confirmed;
    failed |= ts[i].failed;
  }
  uint64_t t1 = now_ns();
  double c1 = cpu_seconds();
  if (failed && g_err[0] == '\0') set_errf("a publisher thread failed");
  json_f("confirm_seconds", (t1 - t0) / 1e9);
  json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
  json_u("confirmed", confirmed);
  json_u("timer_overhead_ns", timer_overhead_ns());
  json_pcts("call", all, (size_t)n);
  if (g_err[0] == '\0' && confirmed != (uint64_t)n)
    set_errf("confirmed %" PRIu64 " of %lld", confirmed, n);
  free(all);
  free(ts);
  free(tid);
  return finish();
}

/* ---- end-to-end latency ------------------------------------------------------------------------- */

typedef struct {
  amqp_connection_state_t c;
  uint64_t total;
  uint64_t *lat;
  atomic_uint_fast64_t received;
  atomic_int stop;
  atomic_int ready;
  uint64_t dups, bad;
  char err[512];
} e2e_consumer;

static void *e2e_consume(void *arg) {
  e2e_consumer *ec = arg;
  amqp_connection_state_t c = ec->c;
  atomic_store(&ec->ready, 1);
  while (!atomic_load(&ec->stop)) {
    amqp_envelope_t env;
    struct timeval tv = {0, 200000};
    amqp_maybe_release_buffers(c);
    amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
    uint64_t now = now_ns();
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
      continue;
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      snprintf(ec->err, sizeof ec->err, "consumer: reply type %d, %s", (int)r.reply_type,
               amqp_error_string2(r.library_error));
      break;
    }
    uint64_t seq, ts;
    if (env.message.body.len >= 16) {
      memcpy(&seq, env.message.body.bytes, 8);
      memcpy(&ts, (uint8_t *)env.message.body.bytes + 8, 8);
      if (seq >= ec->total)
        ec->bad++;
      else if (ec->lat[seq] != 0)
        ec->dups++;
      else {
        ec->lat[seq] = now - ts + 1;
        atomic_fetch_add(&ec->received, 1);
      }
    } else {
      ec->bad++;
    }
    int a = amqp_basic_ack(c, 1, env.delivery_tag, 0);
    amqp_destroy_envelope(&env);
    if (a != AMQP_STATUS_OK) {
      snprintf(ec->err, sizeof ec->err, "consumer: amqp_basic_ack: %s", amqp_error_string2(a));
      break;
    }
  }
  return NULL;
}

static int mode_e2e(void) {
  long long rate = arg_int("rate", 10000), seconds = arg_int("seconds", 5);
  long long size = arg_int("size", 64), warm = arg_int("warmup", 200);
  long long prefetch = arg_int("prefetch", 500);
  long long n = rate * seconds;
  if (size < 16) size = 16;
  pace_init();
  json_begin(CLIENT, "e2e");
  json_i("rate", rate);
  json_i("n", n);
  json_i("size", size);
  static e2e_consumer ec;
  ec.total = (uint64_t)(warm + n);
  ec.lat = calloc(ec.total, sizeof *ec.lat);
  amqp_connection_state_t pc = rconnect();
  amqp_connection_state_t cc = pc ? rconnect() : NULL;
  pthread_t tid;
  int started = 0;
  int durable = (int)arg_int("durable", 0);
  json_b("durable", durable);
  if (cc != NULL && declare(pc, durable) == 0 && confirm_select(pc) == 0) {
    amqp_basic_qos(cc, 1, 0, (uint16_t)prefetch, 0);
    if (rpc_ok(cc, "basic.qos") == 0) {
      amqp_basic_consume(cc, 1, amqp_cstring_bytes(arg_str("queue", "bench")), amqp_empty_bytes, 0,
                         0, 0, amqp_empty_table);
      if (rpc_ok(cc, "basic.consume") == 0) {
        ec.c = cc;
        pthread_create(&tid, NULL, e2e_consume, &ec);
        started = 1;
      }
    }
  }
  if (started) {
    publisher p;
    pub_init(&p, pc, (uint64_t)(warm + n), durable);
    uint8_t *body = calloc(1, (size_t)size);
    uint64_t period = 1000000000ull / (uint64_t)rate, max_lag = 0;
    for (long long i = 0; i < warm && g_err[0] == '\0'; i++) {
      fill_body(body, (size_t)size, (uint64_t)i, now_ns());
      pub_send(&p, body, (size_t)size, NULL);
      sleep_us((long)(period / 1000));
    }
    uint64_t wdl = now_ns() + 20000000000ull;
    while (atomic_load(&ec.received) < (uint64_t)warm && now_ns() < wdl) sleep_us(1000);
    if (atomic_load(&ec.received) < (uint64_t)warm) set_errf("warm-up messages not received");
    double c0 = cpu_seconds();
    uint64_t t0 = now_ns() + 1000000;
    for (long long i = 0; i < n && g_err[0] == '\0'; i++) {
      uint64_t target = t0 + (uint64_t)i * period;
      sleep_until_ns(target);
      uint64_t t = now_ns();
      if (t - target > max_lag) max_lag = t - target;
      fill_body(body, (size_t)size, (uint64_t)(warm + i), t);
      if (pub_send(&p, body, (size_t)size, NULL) != 0) break;
    }
    uint64_t t_end = now_ns();
    if (g_err[0] == '\0') pub_wait_all(&p, 30ull * 1000000000ull);
    uint64_t dl = now_ns() + 30000000000ull;
    while (atomic_load(&ec.received) < ec.total && now_ns() < dl && ec.err[0] == '\0')
      sleep_us(1000);
    double c1 = cpu_seconds();
    atomic_store(&ec.stop, 1);
    pthread_join(tid, NULL);
    if (ec.err[0] != '\0') set_errf("%s", ec.err);
    uint64_t got = atomic_load(&ec.received) - (uint64_t)warm;
    uint64_t *v = calloc((size_t)n, sizeof *v);
    size_t k = 0;
    for (uint64_t i = (uint64_t)warm; i < ec.total; i++)
      if (ec.lat[i] != 0) v[k++] = ec.lat[i] - 1;
    json_f("seconds", (t_end - t0) / 1e9);
    json_f("achieved_rate", n / ((t_end - t0) / 1e9));
    json_u("received", got);
    json_u("confirmed", p.acked);
    json_u("duplicates", ec.dups);
    json_u("max_send_lag_ns", max_lag);
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_pcts("e2e", v, k);
    if (g_err[0] == '\0' && got != (uint64_t)n) set_errf("received %" PRIu64 " of %lld", got, n);
    if (g_err[0] == '\0' && ec.bad != 0) set_errf("malformed bodies");
    free(v);
    free(body);
    free(p.done);
  }
  rclose(cc);
  rclose(pc);
  return finish();
}

/* ---- untimed helpers -------------------------------------------------------------------------------- */

static int mode_delete(void) {
  json_begin(CLIENT, "delete");
  json_s("queue", arg_str("queue", "bench"));
  amqp_connection_state_t c = rconnect();
  if (c != NULL) {
    amqp_queue_delete_ok_t *ok =
        amqp_queue_delete(c, 1, amqp_cstring_bytes(arg_str("queue", "bench")), 0, 0);
    if (rpc_ok(c, "queue.delete") == 0 && ok != NULL) json_u("messages", ok->message_count);
  }
  rclose(c);
  return finish();
}

static int mode_count(void) {
  json_begin(CLIENT, "count");
  json_s("queue", arg_str("queue", "bench"));
  amqp_connection_state_t c = rconnect();
  if (c != NULL) {
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(
        c, 1, amqp_cstring_bytes(arg_str("queue", "bench")), 1, 0, 0, 0, amqp_empty_table);
    if (rpc_ok(c, "queue.declare passive") == 0 && ok != NULL) {
      json_u("messages", ok->message_count);
      json_u("consumers", ok->consumer_count);
    }
  }
  rclose(c);
  return finish();
}

/* ---- many producer threads sharing one connection under a lock ------------------------------ */

typedef struct {
  pthread_mutex_t lock;
  amqp_connection_state_t c;
  int queues;
  publisher *pubs; /* channel k+1 = pubs[k] */
  char (*names)[256];
  int failed;
} mt_conn;

static int mt_frame(mt_conn *m, amqp_frame_t *f) {
  if (f->channel < 1 || f->channel > m->queues) return 0;
  return pub_frame(&m->pubs[f->channel - 1], f);
}

/* reads confirms of every channel: one frame blocking (up to 1 s) if `block`, then whatever is
 * already buffered or readable without waiting. Caller holds the lock. */
static int mt_drain(mt_conn *m, int block) {
  amqp_frame_t f;
  struct timeval tv0 = {0, 0}, tv1 = {1, 0};
  for (;;) {
    int r = amqp_simple_wait_frame_noblock(m->c, &f, block ? &tv1 : &tv0);
    if (r == AMQP_STATUS_TIMEOUT) return block ? 1 : 0;
    block = 0;
    if (r != AMQP_STATUS_OK) {
      set_errf("reading confirms: %s", amqp_error_string2(r));
      return -1;
    }
    if (mt_frame(m, &f) != 0) return -1;
  }
}

typedef struct {
  mt_conn *m;
  int k;
  size_t size;
  long long calls;
  uint64_t *lat;
  pthread_barrier_t *barrier;
} mt_thread;

static int mt_publish(mt_conn *m, int k, const uint8_t *body, size_t size) {
  publisher *p = &m->pubs[k];
  while (p->published - p->settled >= p->window) {
    if (mt_drain(m, 1) < 0) return -1;
  }
  amqp_bytes_t b = {size, (void *)body};
  int r = amqp_basic_publish(m->c, (amqp_channel_t)(k + 1), amqp_empty_bytes,
                             amqp_cstring_bytes(m->names[k]), p->mandatory, 0, &p->props, b);
  if (r != AMQP_STATUS_OK) {
    set_errf("amqp_basic_publish: %s", amqp_error_string2(r));
    return -1;
  }
  p->published++;
  if ((p->published & 63) == 0) return mt_drain(m, 0) < 0 ? -1 : 0;
  return 0;
}

static void *mt_run(void *arg) {
  mt_thread *t = arg;
  uint8_t *body = calloc(1, t->size + 16);
  pthread_barrier_wait(t->barrier);
  for (long long i = 0; i < t->calls && !t->m->failed; i++) {
    fill_body(body, t->size, (uint64_t)i, 0);
    uint64_t a = now_ns();
    pthread_mutex_lock(&t->m->lock);
    int r = mt_publish(t->m, t->k, body, t->size);
    pthread_mutex_unlock(&t->m->lock);
    t->lat[i] = now_ns() - a;
    if (r != 0) t->m->failed = 1;
  }
  free(body);
  return NULL;
}

static uint64_t mt_settled(mt_conn *m, uint64_t *published) {
  uint64_t s = 0;
  *published = 0;
  for (int k = 0; k < m->queues; k++) {
    s += m->pubs[k].acked;
    *published += m->pubs[k].published;
  }
  return s;
}

static int mode_threads(void) {
  long long n = arg_int("n", 200000), size = arg_int("size", 64);
  int threads = (int)arg_int("threads", 8), queues = (int)arg_int("queues", 1);
  if (threads < 1 || queues < 1 || queues > threads) {
    fprintf(stderr, "rmqc threads: need 1 <= queues <= threads\n");
    return 2;
  }
  long long per = n / threads;
  n = per * threads;
  json_begin(CLIENT, "threads");
  json_i("n", n);
  json_i("size", size);
  json_i("threads", threads);
  json_i("queues", queues);
  mt_conn m;
  memset(&m, 0, sizeof m);
  pthread_mutex_init(&m.lock, NULL);
  m.queues = queues;
  m.pubs = calloc((size_t)queues, sizeof *m.pubs);
  m.names = calloc((size_t)queues, sizeof *m.names);
  m.c = rconnect();
  int ok = m.c != NULL;
  for (int k = 0; k < queues && ok; k++) {
    snprintf(m.names[k], sizeof m.names[k], "%s.%d", arg_str("queue", "bench"), k);
    amqp_channel_t ch = (amqp_channel_t)(k + 1);
    if (k > 0) {
      amqp_channel_open(m.c, ch);
      ok = rpc_ok(m.c, "channel.open") == 0;
    }
    if (ok) {
      amqp_queue_declare(m.c, ch, amqp_cstring_bytes(m.names[k]), 0, 0, 0, 0, amqp_empty_table);
      ok = rpc_ok(m.c, "queue.declare") == 0;
    }
    if (ok) {
      amqp_confirm_select(m.c, ch);
      ok = rpc_ok(m.c, "confirm.select") == 0;
    }
    /* the messages of channel k: every thread i with i % queues == k */
    uint64_t mine = (uint64_t)per * (uint64_t)((threads - 1 - k) / queues + 1);
    pub_init(&m.pubs[k], m.c, mine, 0);
  }
  if (ok) {
    mt_thread *ts = calloc((size_t)threads, sizeof *ts);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    uint64_t *all = calloc((size_t)n, sizeof *all);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++) {
      ts[i] = (mt_thread){&m, i % queues, (size_t)size, per, all + (size_t)i * per, &barrier};
      pthread_create(&tid[i], NULL, mt_run, &ts[i]);
    }
    double c0 = cpu_seconds();
    pthread_barrier_wait(&barrier);
    uint64_t t0 = now_ns();
    for (int i = 0; i < threads; i++) pthread_join(tid[i], NULL);
    uint64_t deadline = now_ns() + 300ull * 1000000000ull, published = 0, acked = 0;
    while (!m.failed) {
      acked = mt_settled(&m, &published);
      if (acked >= published) break;
      if (mt_drain(&m, 1) < 0 || now_ns() > deadline) m.failed = 1;
    }
    uint64_t t1 = now_ns();
    double c1 = cpu_seconds();
    acked = mt_settled(&m, &published);
    json_f("seconds", (t1 - t0) / 1e9);
    json_f("msgs_per_s", (double)n / ((t1 - t0) / 1e9));
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_u("confirmed", acked);
    json_pcts("call", all, (size_t)n);
    if (g_err[0] == '\0' && acked != (uint64_t)n)
      set_errf("confirmed %" PRIu64 " of %lld", acked, n);
    free(all);
    free(ts);
    free(tid);
  }
  for (int k = 0; k < queues; k++) free(m.pubs[k].done);
  free(m.pubs);
  free(m.names);
  rclose(m.c);
  return finish();
}

/* ---- many queues -------------------------------------------------------------------------- */

/* many: the work of ours' `many` with rabbitmq-c as its users write it: one connection (one
 * thread), channel j+1 for QUEUE.j (confirm mode), publishes round robin streaming confirms
 * (read without blocking every 64 publishes; at most `window` in flight per channel), then
 * basic.qos(prefetch) + basic.consume on every channel and one amqp_consume_message loop that
 * acks each delivery on its channel. */
typedef struct {
  uint64_t published, acked, low; /* every tag below `low` is settled */
  uint8_t *done;
} many_ch;

static int many_frame(many_ch *chs, long long nq, uint64_t per, amqp_frame_t *f, uint64_t *acked) {
  if (f->frame_type != AMQP_FRAME_METHOD) return 0;
  if (f->payload.method.id != AMQP_BASIC_ACK_METHOD) {
    if (f->payload.method.id == AMQP_BASIC_NACK_METHOD ||
        f->payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
        f->payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
      set_errf("method 0x%08X on channel %u", f->payload.method.id, f->channel);
      return -1;
    }
    return 0;
  }
  if (f->channel < 1 || f->channel > nq) return 0;
  many_ch *ch = &chs[f->channel - 1];
  amqp_basic_ack_t *a = f->payload.method.decoded;
  uint64_t from = a->multiple ? ch->low : a->delivery_tag;
  for (uint64_t t = from; t <= a->delivery_tag && t <= per; t++) {
    if (!ch->done[t]) {
      ch->done[t] = 1;
      ch->acked++;
      (*acked)++;
    }
  }
  while (ch->low <= per && ch->done[ch->low]) ch->low++;
  return 0;
}

static int many_drain(amqp_connection_state_t c, many_ch *chs, long long nq, uint64_t per,
                      uint64_t *acked, int block) {
  struct timeval tv0 = {0, 0}, tv1 = {1, 0};
  for (;;) {
    amqp_frame_t f;
    int r = amqp_simple_wait_frame_noblock(c, &f, block ? &tv1 : &tv0);
    if (r == AMQP_STATUS_TIMEOUT) return block ? 1 : 0;
    if (r != AMQP_STATUS_OK) {
      set_errf("reading confirms: %s", amqp_error_string2(r));
      return -1;
    }
    if (many_frame(chs, nq, per, &f, acked) != 0) return -1;
    block = 0;
    if (!amqp_frames_enqueued(c) && !amqp_data_in_buffer(c)) {
      amqp_maybe_release_buffers(c);
      return 0;
    }
  }
}

static int mode_many(void) {
  long long nq = arg_int("queues", 10), size = arg_int("size", 64);
  long long prefetch = arg_int("prefetch", 100), window = arg_int("window", 1000000000);
  long long per = arg_int("n", 100000) / nq, n = per * nq;
  int mandatory = (int)arg_int("mandatory", 0);
  const char *prefix = arg_str("queue", "bench");
  json_begin(CLIENT, "many");
  json_i("queues", nq);
  json_i("n", n);
  json_i("size", size);
  json_i("prefetch", prefetch);
  json_b("mandatory", mandatory);
  json_i("window", window);
  amqp_connection_state_t c = rconnect();
  many_ch *chs = calloc((size_t)nq, sizeof *chs);
  char name[256];
  long threads_idle = proc_status_kb("Threads");
  for (long long j = 0; c != NULL && j < nq && g_err[0] == '\0'; j++) {
    amqp_channel_t ch = (amqp_channel_t)(j + 1);
    if (ch != 1) {
      amqp_channel_open(c, ch);
      if (rpc_ok(c, "channel.open") != 0) break;
    }
    snprintf(name, sizeof name, "%s.%lld", prefix, j);
    amqp_queue_declare(c, ch, amqp_cstring_bytes(name), 0, 0, 0, 0, amqp_empty_table);
    if (rpc_ok(c, "queue.declare") != 0) break;
    amqp_confirm_select(c, ch);
    if (rpc_ok(c, "confirm.select") != 0) break;
    chs[j].done = calloc((size_t)per + 2, 1);
    chs[j].low = 1;
  }
  if (c != NULL && g_err[0] == '\0') {
    uint8_t *body = calloc(1, (size_t)size + 16);
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    uint64_t acked = 0, sent = 0;
    double c0 = cpu_seconds();
    uint64_t t0 = now_ns();
    for (long long i = 0; i < per && g_err[0] == '\0'; i++) {
      for (long long j = 0; j < nq && g_err[0] == '\0'; j++) {
        while (chs[j].published - chs[j].acked >= (uint64_t)window && g_err[0] == '\0')
          if (many_drain(c, chs, nq, (uint64_t)per, &acked, 1) < 0) break;
        snprintf(name, sizeof name, "%s.%lld", prefix, j);
        fill_body(body, (size_t)size, (uint64_t)(i * nq + j), 0);
        amqp_bytes_t b = {(size_t)size, body};
        int r = amqp_basic_publish(c, (amqp_channel_t)(j + 1), amqp_empty_bytes,
                                   amqp_cstring_bytes(name), mandatory, 0, &props, b);
        if (r != AMQP_STATUS_OK) {
          set_errf("amqp_basic_publish: %s", amqp_error_string2(r));
          break;
        }
        chs[j].published++;
        if ((++sent & 63) == 0 && many_drain(c, chs, nq, (uint64_t)per, &acked, 0) < 0) break;
      }
    }
    uint64_t deadline = now_ns() + 300ull * 1000000000ull;
    while (g_err[0] == '\0' && acked < (uint64_t)n && now_ns() < deadline)
      if (many_drain(c, chs, nq, (uint64_t)per, &acked, 1) < 0) break;
    uint64_t t1 = now_ns();
    double c1 = cpu_seconds();
    json_f("pub_seconds", (t1 - t0) / 1e9);
    json_f("pub_msgs_per_s", n / ((t1 - t0) / 1e9));
    json_f("pub_cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_u("confirmed", acked);
    if (g_err[0] == '\0' && acked != (uint64_t)n) set_errf("confirmed %" PRIu64 " of %lld", acked, n);
    free(body);
  }
  if (c != NULL && g_err[0] == '\0') {
    double c0 = cpu_seconds();
    uint64_t t0 = now_ns(), got = 0;
    /* every basic.qos first (no delivery yet), then basic.consume with no-wait: RPCs
     * issued while other channels' deliveries flow stalled librabbitmq 0.11 at 100 channels */
    for (long long j = 0; j < nq && g_err[0] == '\0'; j++) {
      amqp_basic_qos(c, (amqp_channel_t)(j + 1), 0, (uint16_t)prefetch, 0);
      if (rpc_ok(c, "basic.qos") != 0) break;
    }
    for (long long j = 0; j < nq && g_err[0] == '\0'; j++) {
      snprintf(name, sizeof name, "%s.%lld", prefix, j);
      amqp_basic_consume_t req;
      memset(&req, 0, sizeof req);
      req.queue = amqp_cstring_bytes(name);
      req.nowait = 1;
      req.arguments = amqp_empty_table;
      int r = amqp_send_method(c, (amqp_channel_t)(j + 1), AMQP_BASIC_CONSUME_METHOD, &req);
      if (r != AMQP_STATUS_OK) set_errf("basic.consume: %s", amqp_error_string2(r));
    }
    struct timeval tv = {30, 0};
    while (g_err[0] == '\0' && got < (uint64_t)n) {
      amqp_envelope_t env;
      amqp_maybe_release_buffers(c);
      amqp_rpc_reply_t r = amqp_consume_message(c, &env, &tv, 0);
      if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        set_errf("amqp_consume_message after %" PRIu64 " messages: reply type %d, %s", got,
                 (int)r.reply_type, amqp_error_string2(r.library_error));
        break;
      }
      int a = amqp_basic_ack(c, env.channel, env.delivery_tag, 0);
      amqp_destroy_envelope(&env);
      if (a != AMQP_STATUS_OK) {
        set_errf("amqp_basic_ack: %s", amqp_error_string2(a));
        break;
      }
      got++;
    }
    uint64_t t1 = now_ns();
    double c1 = cpu_seconds();
    json_f("seconds", (t1 - t0) / 1e9);
    json_f("msgs_per_s", n / ((t1 - t0) / 1e9));
    json_f("cpu_us_per_msg", (c1 - c0) * 1e6 / (double)n);
    json_u("consumed", got);
    json_i("threads_before_queues", threads_idle);
    json_i("threads_consuming", proc_status_kb("Threads"));
    json_i("rss_kb", proc_status_kb("VmRSS"));
    json_i("rss_peak_kb", proc_status_kb("VmHWM"));
  }
  if (c != NULL) {
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
  }
  for (long long j = 0; j < nq; j++) free(chs[j].done);
  free(chs);
  return finish();
}

/* delete_many: (untimed) deletes QUEUE.0 .. QUEUE.K-1; prints how many messages they held */
static int mode_delete_many(void) {
  long long nq = arg_int("queues", 10);
  const char *prefix = arg_str("queue", "bench");
  json_begin(CLIENT, "delete_many");
  amqp_connection_state_t c = rconnect();
  uint64_t messages = 0;
  long long deleted = 0;
  char name[256];
  for (long long j = 0; c != NULL && j < nq; j++) {
    snprintf(name, sizeof name, "%s.%lld", prefix, j);
    amqp_queue_delete_ok_t *ok = amqp_queue_delete(c, 1, amqp_cstring_bytes(name), 0, 0);
    if (ok == NULL) {
      rpc_ok(c, "queue.delete");
      break;
    }
    messages += ok->message_count;
    deleted++;
  }
  json_i("deleted", deleted);
  json_u("messages", messages);
  rclose(c);
  return finish();
}

int main(int argc, char **argv) {
  g_argc = argc;
  g_argv = argv;
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "publish") == 0 || strcmp(mode, "fill") == 0) return mode_publish(mode);
  if (strcmp(mode, "consume") == 0) return mode_consume();
  if (strcmp(mode, "latency") == 0) return mode_latency();
  if (strcmp(mode, "e2e") == 0) return mode_e2e();
  if (strcmp(mode, "delete") == 0) return mode_delete();
  if (strcmp(mode, "count") == 0) return mode_count();
  if (strcmp(mode, "threads") == 0) return mode_threads();
  if (strcmp(mode, "many") == 0) return mode_many();
  if (strcmp(mode, "delete_many") == 0) return mode_delete_many();
  if (strcmp(mode, "version") == 0) {
    printf("%s\n", amqp_version());
    return 0;
  }
  fprintf(stderr, "usage: rmqc publish|consume|latency|e2e|threads|fill|delete|count|many|delete_many|version key=value...\n");
  return 2;
}
