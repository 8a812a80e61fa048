/* rpc.c -- request/reply (RPC) over RabbitMQ with resilient-amqp: reply_to and
 * correlation_id.
 *
 *   usage: rpc [URI] [COUNT] [SECONDS]
 *     URI      default: $DEMO_URI, then $RESILIENT_AMQP_TEST_URI,
 *              then amqp://guest:guest@127.0.0.1:5672/%2f
 *     COUNT    requests to send (default 100)
 *     SECONDS  give up waiting for the replies after this long (default 30)
 *
 *   build: cc -std=c11 -Wall -Wextra -pthread -Iinclude examples-c/rpc.c \
 *             -Ltarget/release -lresilient_amqp -Wl,-rpath,$PWD/target/release -o rpc
 *
 * Both sides run in this one process, each on its own connection, as two
 * services would:
 *   - the server consumes the request queue; its callback computes the reply
 *     (the square of the number in the body) and publishes it on its request
 *     queue's handle with the request's `reply_to` as the message's own
 *     routing key (through the default exchange, that is the reply queue) and
 *     the request's `correlation_id`. It acks the request only once the reply
 *     is buffered (AMQP_REQUEUE if it could not be: nothing is lost).
 *   - the client opens an exclusive reply queue of its own (deleted with its
 *     connection), consumes it, publishes every request with `reply_to` and a
 *     `correlation_id`, and matches each reply to its request by that id.
 *   - a reply whose client is gone (its reply queue deleted) comes back to the
 *     server as AMQP_REPORT_UNROUTABLE through its report function, not resent.
 * Requests and replies are buffered and resent across reconnects like any
 * message, so a request may be answered twice (at-least-once): the client
 * counts an id once.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "resilient_amqp.h"

#define MAX_REQUESTS 100000

/* --- the server ---------------------------------------------------------- */

struct server {
  amqp_queue_handle requests;
  atomic_ulong answered;
  atomic_ulong unroutable;
};

/* Runs on a library thread. The delivery (and its message) is valid only
 * during the call; amqp_publish_message copies what it needs before it
 * returns, so the request's strings can be passed straight on. */
static amqp_disposition serve(const amqp_delivery *d, void *userdata) {
  struct server *s = userdata;
  const amqp_message *req = d->message;
  if (req == NULL || req->reply_to == NULL || req->correlation_id == NULL) {
    return AMQP_REJECT; /* not a request we can answer: dead-letter it */
  }
  char number[32] = {0};
  size_t n = d->body_len < sizeof number - 1 ? d->body_len : sizeof number - 1;
  if (n > 0) memcpy(number, d->body, n);
  long long x = strtoll(number, NULL, 10);
  char reply[64];
  int len = snprintf(reply, sizeof reply, "%lld", x * x);

  amqp_message m = {.size = sizeof m};
  m.routing_key = req->reply_to; /* the default exchange routes by queue name */
  m.correlation_id = req->correlation_id;
  m.content_type = "text/plain";
  m.delivery_mode = 1; /* a reply is worth nothing once its client is gone */
  amqp_result rc = amqp_publish_message(s->requests, reply, (size_t)len, &m);
  if (rc != AMQP_OK) return AMQP_REQUEUE; /* e.g. AMQP_ERR_BUFFER_FULL: try again later */
  atomic_fetch_add(&s->answered, 1);
  return AMQP_ACK;
}

/* Runs on the server connection's report thread, once per reply. */
static void on_reply_report(const amqp_delivery_report *r, void *userdata) {
  struct server *s = userdata;
  if (r->status == AMQP_REPORT_UNROUTABLE) {
    atomic_fetch_add(&s->unroutable, 1);
    fprintf(stderr, "rpc server: a reply found no client: %s\n", r->reason ? r->reason : "");
  }
}

/* --- the client ---------------------------------------------------------- */

struct client {
  atomic_uchar replied[MAX_REQUESTS];
  atomic_ulong replies;
  atomic_ulong duplicates;
  atomic_ulong wrong;
};

/* Runs on a library thread: matches the reply to its request. */
static amqp_disposition on_reply(const amqp_delivery *d, void *userdata) {
  struct client *c = userdata;
  const amqp_message *m = d->message;
  unsigned long i;
  if (m == NULL || m->correlation_id == NULL || sscanf(m->correlation_id, "req-%lu", &i) != 1 ||
      i >= MAX_REQUESTS) {
    atomic_fetch_add(&c->wrong, 1);
    return AMQP_ACK; /* not ours to answer; nothing to retry */
  }
  char got[64] = {0};
  size_t n = d->body_len < sizeof got - 1 ? d->body_len : sizeof got - 1;
  if (n > 0) memcpy(got, d->body, n);
  if (strtoull(got, NULL, 10) != (unsigned long long)i * i) atomic_fetch_add(&c->wrong, 1);
  if (atomic_exchange(&c->replied[i], 1) == 0) {
    atomic_fetch_add(&c->replies, 1);
  } else {
    atomic_fetch_add(&c->duplicates, 1);
  }
  return AMQP_ACK;
}

/* --- main ---------------------------------------------------------------- */

static void print_error(const char *what, amqp_result rc) {
  char msg[512];
  amqp_last_error(msg, sizeof msg);
  fprintf(stderr, "rpc: %s failed: %s: %s\n", what, amqp_result_str(rc), msg);
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

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  const char *uri = argc > 1 ? argv[1] : default_uri();
  unsigned long count = argc > 2 ? strtoul(argv[2], NULL, 10) : 100;
  double limit_s = argc > 3 ? strtod(argv[3], NULL) : 30.0;
  if (count == 0 || count > MAX_REQUESTS) {
    fprintf(stderr, "rpc: COUNT must be 1..%d\n", MAX_REQUESTS);
    return 2;
  }
  /* Outlive the consumers: the library calls back until close returns. */
  static struct server server;
  static struct client client;
  char request_queue[64], reply_queue[64];
  snprintf(request_queue, sizeof request_queue, "resilient-amqp-rpc-%ld", (long)getpid());
  snprintf(reply_queue, sizeof reply_queue, "resilient-amqp-rpc-replies-%ld", (long)getpid());
  amqp_connection_handle server_conn, client_conn;
  amqp_queue_handle client_requests, replies;
  amqp_result rc;
  int status = 2;

  /* The server: a transient request queue, removed when unused. */
  if ((rc = amqp_connect(uri, NULL, &server_conn)) != AMQP_OK) {
    print_error("amqp_connect (server)", rc);
    return 2;
  }
  if ((rc = amqp_connect(uri, NULL, &client_conn)) != AMQP_OK) {
    print_error("amqp_connect (client)", rc);
    amqp_close_graceful(server_conn, 0, NULL);
    return 2;
  }
  const char *request_options = "durable=false&auto_delete=true&prefetch=50";
  rc = amqp_queue_open(server_conn, request_queue, NULL, NULL, request_options, &server.requests);
  if (rc != AMQP_OK) {
    print_error("amqp_queue_open (requests)", rc);
    goto out;
  }
  if ((rc = amqp_set_report_callback(server.requests, on_reply_report, &server)) != AMQP_OK) {
    print_error("amqp_set_report_callback", rc);
    goto out;
  }
  if ((rc = amqp_consume(server.requests, serve, &server, 4)) != AMQP_OK) {
    print_error("amqp_consume (server)", rc);
    goto out;
  }

  /* The client: the same request queue (same attributes, or the broker
   * refuses the declare), and an exclusive reply queue of its own. */
  rc = amqp_queue_open(client_conn, request_queue, NULL, NULL, request_options, &client_requests);
  if (rc != AMQP_OK) {
    print_error("amqp_queue_open (client requests)", rc);
    goto out;
  }
  rc = amqp_queue_open(client_conn, reply_queue, NULL, NULL, "exclusive=true&durable=false", &replies);
  if (rc != AMQP_OK) {
    print_error("amqp_queue_open (replies)", rc);
    goto out;
  }
  if ((rc = amqp_consume(replies, on_reply, &client, 1)) != AMQP_OK) {
    print_error("amqp_consume (client)", rc);
    goto out;
  }

  double t0 = now_s();
  for (unsigned long i = 0; i < count; i++) {
    char body[32], id[32];
    int len = snprintf(body, sizeof body, "%lu", i);
    snprintf(id, sizeof id, "req-%lu", i);
    amqp_message m = {.size = sizeof m};
    m.reply_to = reply_queue;
    m.correlation_id = id;
    m.content_type = "text/plain";
    m.expiration = "60000"; /* a request nobody answers in a minute is dropped */
    while ((rc = amqp_publish_message(client_requests, body, (size_t)len, &m)) ==
           AMQP_ERR_BUFFER_FULL) {
      sleep_ms(1); /* backpressure: the buffer has room again once confirms arrive */
    }
    if (rc != AMQP_OK) {
      print_error("amqp_publish_message (request)", rc);
      goto out;
    }
  }
  while (atomic_load(&client.replies) < count && now_s() - t0 < limit_s) sleep_ms(10);
  double took = now_s() - t0;
  unsigned long got = atomic_load(&client.replies);
  printf("rpc: answered %lu of %lu requests in %.2f s (%lu duplicates, %lu wrong)\n", got, count,
         took, atomic_load(&client.duplicates), atomic_load(&client.wrong));
  status = (got == count && atomic_load(&client.wrong) == 0) ? 0 : 1;

out:;
  /* The client first: its reply queue goes with its connection. */
  uint64_t unsent_client = 0, unsent_server = 0;
  amqp_result rc_client = amqp_close_graceful(client_conn, 5000, &unsent_client);
  amqp_result rc_server = amqp_close_graceful(server_conn, 5000, &unsent_server);
  printf("rpc: close: client %s (unsent %llu), server %s (unsent %llu, answered %lu, "
         "unroutable %lu)\n",
         amqp_result_str(rc_client), (unsigned long long)unsent_client,
         amqp_result_str(rc_server), (unsigned long long)unsent_server,
         atomic_load(&server.answered), atomic_load(&server.unroutable));
  return status;
}
