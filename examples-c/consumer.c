/* consumer.c -- consume messages from a queue with resilient-amqp.
 *
 *   usage: consumer [URI] [QUEUE] [COUNT] [SECONDS]
 *     URI      default: $DEMO_URI, then $RESILIENT_AMQP_TEST_URI,
 *              then amqp://guest:guest@127.0.0.1:5672/%2f
 *     QUEUE    default: resilient-amqp-example
 *     COUNT    stop after this many deliveries (default 10000; 0 = no limit)
 *     SECONDS  stop after this long at most (default 30)
 *
 *   build: cc -std=c11 -Wall -Wextra -pthread -Iinclude examples-c/consumer.c \
 *             -Ltarget/release -lresilient_amqp -Wl,-rpath,$PWD/target/release -o consumer
 *
 * What it shows:
 *   - amqp_consume starts `repeat` consumers; the callback runs on threads of
 *     the library, up to `repeat` at a time, so shared state must be
 *     thread-safe (here: C11 atomics).
 *   - the callback's return value is the disposition: AMQP_ACK (done),
 *     AMQP_REJECT (failed, dead-letter) or AMQP_REQUEUE (try again later).
 *   - the delivery (body included) is valid only during the callback: copy
 *     what you keep.
 *   - consumers are restarted by the library after every reconnect; a message
 *     may then arrive twice (at-least-once), never zero times.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "resilient_amqp.h"

#define REPEAT 4

struct counters {
  atomic_ulong received;
  atomic_ulong redelivered;
  atomic_ulong bytes;
};

/* Runs on a library thread, up to REPEAT at once. Keep it short; it may
 * call amqp_publish, amqp_consume_stop or even amqp_close_graceful. */
static amqp_disposition on_message(const amqp_delivery *d, void *userdata) {
  struct counters *c = userdata;
  unsigned long n = atomic_fetch_add(&c->received, 1) + 1;
  atomic_fetch_add(&c->bytes, d->body_len);
  if (d->redelivered) atomic_fetch_add(&c->redelivered, 1);
  if (n % 1000 == 0) {
    /* body and routing key are not NUL-terminated: print them with their
     * lengths (an empty body may come with a NULL pointer) */
    const char *body = d->body_len > 0 ? (const char *)d->body : "";
    const char *rk = d->routing_key_len > 0 ? d->routing_key : "";
    fprintf(stderr, "consumer: %lu received, last \"%.*s\" (routing key \"%.*s\")\n", n,
            (int)d->body_len, body, (int)d->routing_key_len, rk);
  }
  return AMQP_ACK;
}

static void print_error(const char *what, amqp_result rc) {
  char msg[512];
  amqp_last_error(msg, sizeof msg); /* truncated like snprintf if longer */
  fprintf(stderr, "consumer: %s failed: %s: %s\n", what, amqp_result_str(rc), msg);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *default_uri(void) {
  const char *uri = getenv("DEMO_URI");
  if (uri == NULL || uri[0] == '\0') uri = getenv("RESILIENT_AMQP_TEST_URI");
  if (uri == NULL || uri[0] == '\0') uri = "amqp://guest:guest@127.0.0.1:5672/%2f";
  return uri;
}

int main(int argc, char **argv) {
  const char *uri = argc > 1 ? argv[1] : default_uri();
  const char *queue = argc > 2 ? argv[2] : "resilient-amqp-example";
  unsigned long want = argc > 3 ? strtoul(argv[3], NULL, 10) : 10000;
  double limit_s = argc > 4 ? strtod(argv[4], NULL) : 30.0;
  static struct counters counters; /* must outlive the consumers */
  amqp_connection_handle conn;
  amqp_queue_handle q;
  amqp_result rc;

  rc = amqp_connect(uri, NULL, &conn);
  if (rc != AMQP_OK) {
    print_error("amqp_connect", rc);
    return 2;
  }
  /* Same attributes as the publisher (durable by default), or the broker
   * refuses the declaration with AMQP_ERR_BROKER. */
  rc = amqp_queue_open(conn, queue, NULL, NULL, "prefetch=200", &q);
  if (rc != AMQP_OK) {
    print_error("amqp_queue_open", rc);
    amqp_close_graceful(conn, 0, NULL);
    return 2;
  }
  rc = amqp_consume(q, on_message, &counters, REPEAT);
  if (rc != AMQP_OK) {
    print_error("amqp_consume", rc);
    amqp_close_graceful(conn, 0, NULL);
    return 2;
  }

  /* The callbacks do the work; the main thread only watches the clock. */
  double t0 = now_s();
  while ((want == 0 || atomic_load(&counters.received) < want) && now_s() - t0 < limit_s) {
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
  }

  /* Stops the consumers (no callback runs after it returns), then closes.
   * Deliveries prefetched but not handed to the callback go back to the
   * broker for the next consumer. */
  uint64_t unsent = 0;
  rc = amqp_close_graceful(conn, 5000, &unsent);
  unsigned long got = atomic_load(&counters.received);
  printf("received %lu messages (%lu bytes, %lu redelivered) from \"%s\" in %.1f s; close: %s\n",
         got, atomic_load(&counters.bytes), atomic_load(&counters.redelivered), queue,
         now_s() - t0, amqp_result_str(rc));
  return (want == 0 || got >= want) ? 0 : 1;
}
