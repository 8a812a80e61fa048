/* rpc.c -- request/reply (RPC) over RabbitMQ with resilient-amqp: reply_to and
 * correlation_id, across a broker restart.
 *
 *   usage: rpc [URI] [COUNT] [SECONDS]
 *     URI      default: $DEMO_URI, then $RESILIENT_AMQP_TEST_URI,
 *              then amqp://guest:guest@127.0.0.1:5672/%2f
 *     COUNT    requests to send (default 100)
 *     SECONDS  give up waiting for the replies after this long (default 30)
 *   environment:
 *     DEMO_CTL  optional: a command prefix that runs rabbitmqctl against the
 *               broker (e.g. "scripts/broker.sh ctl"). Then the broker
 *               application is stopped once half the requests are answered,
 *               the other half is published while it is down, and it is
 *               started again.
 *
 *   build: cc -std=c11 -Wall -Wextra -pthread -Iinclude examples-c/rpc.c \
 *             -Ltarget/release -lresilient_amqp -Wl,-rpath,$PWD/target/release -o rpc
 *
 * Both sides run in this one process, each on its own connection, as two
 * services would:
 *   - the server consumes the (durable) request queue; its callback computes
 *     the reply (the square of the number in the body) and publishes it on its
 *     request queue's handle with the request's `reply_to` as the message's
 *     own routing key (through the default exchange, that is the reply queue)
 *     and the request's `correlation_id`. It acks the request only once the
 *     reply is buffered (AMQP_REQUEUE if it could not be: nothing is lost).
 *   - the client has a server-named reply queue (exclusive: deleted with its
 *     connection; amqp_queue_name reads the name the broker gave, a new one
 *     after every reconnect), consumes it, publishes every request with that
 *     name as `reply_to` and a `correlation_id`, and matches each reply to its
 *     request by that id.
 *   - a reply to a reply queue that is gone (its client reconnected, so the
 *     queue has a new name) comes back to the server as
 *     AMQP_REPORT_UNROUTABLE through its report function, not resent; the
 *     client sends a request that got no reply within RETRY_S again, with
 *     the reply queue's current name.
 * A request may so be answered twice (at-least-once): the client counts an
 * id once, and the work must be safe to repeat (here it is).
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
#define RETRY_S 2.0 /* a request unanswered this long is sent again */

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
  if (r->status == AMQP_REPORT_UNROUTABLE && atomic_fetch_add(&s->unroutable, 1) == 0) {
    /* once: a client that reconnected leaves every reply in flight behind */
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

/* Runs "$DEMO_CTL what"; 0 when it succeeded. */
static int run_ctl(const char *ctl, const char *what) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s %s 1>&2", ctl, what);
  printf("rpc: running %s %s\n", ctl, what);
  fflush(stdout);
  return system(cmd) == 0 ? 0 : -1;
}

/* The reply queue's current name (the broker names it on every declare);
 * waits up to `limit_s` for the first one. */
static bool reply_queue_name(amqp_queue_handle replies, char *buf, size_t cap, double limit_s) {
  double t0 = now_s();
  for (;;) {
    size_t len = 0;
    if (amqp_queue_name(replies, buf, cap, &len) == AMQP_OK && len > 0 && len < cap) return true;
    if (now_s() - t0 > limit_s) return false;
    sleep_ms(10);
  }
}

/* Publishes request `i` with the reply queue's current name; waits while
 * the buffer is full (backpressure). */
static amqp_result send_request(amqp_queue_handle requests, amqp_queue_handle replies,
                                unsigned long i) {
  char body[32], id[32], reply_to[256];
  if (!reply_queue_name(replies, reply_to, sizeof reply_to, 30.0)) return AMQP_ERR_TIMEOUT;
  int len = snprintf(body, sizeof body, "%lu", i);
  snprintf(id, sizeof id, "req-%lu", i);
  amqp_message m = {.size = sizeof m};
  m.reply_to = reply_to;
  m.correlation_id = id;
  m.content_type = "text/plain";
  amqp_result rc;
  while ((rc = amqp_publish_message(requests, body, (size_t)len, &m)) == AMQP_ERR_BUFFER_FULL) {
    sleep_ms(1); /* the buffer has room again once confirms arrive */
  }
  return rc;
}

/* Sends requests [from, to) that have no reply yet and were last sent
 * before `older_than` (every one of them when it is 0); returns how many. */
static long send_unanswered(struct client *c, double *sent_at, amqp_queue_handle requests,
                            amqp_queue_handle replies, unsigned long from, unsigned long to,
                            double older_than) {
  long sent = 0;
  for (unsigned long i = from; i < to; i++) {
    if (atomic_load(&c->replied[i]) || (older_than > 0 && sent_at[i] > older_than)) continue;
    amqp_result rc = send_request(requests, replies, i);
    if (rc != AMQP_OK) {
      print_error("amqp_publish_message (request)", rc);
      return -1;
    }
    sent_at[i] = now_s();
    sent++;
  }
  return sent;
}

/* Waits until every request below `to` has its reply or `deadline`, sending
 * again those unanswered for RETRY_S; false on a publish error. */
static bool await_replies(struct client *c, double *sent_at, amqp_queue_handle requests,
                          amqp_queue_handle replies, unsigned long to, double deadline,
                          unsigned long *resent) {
  for (;;) {
    unsigned long missing = 0;
    for (unsigned long i = 0; i < to; i++) missing += !atomic_load(&c->replied[i]);
    if (missing == 0 || now_s() > deadline) return true;
    long n = send_unanswered(c, sent_at, requests, replies, 0, to, now_s() - RETRY_S);
    if (n < 0) return false;
    *resent += (unsigned long)n;
    sleep_ms(20);
  }
}

int main(int argc, char **argv) {
  const char *uri = argc > 1 ? argv[1] : default_uri();
  unsigned long count = argc > 2 ? strtoul(argv[2], NULL, 10) : 100;
  double limit_s = argc > 3 ? strtod(argv[3], NULL) : 30.0;
  const char *ctl = getenv("DEMO_CTL");
  if (ctl != NULL && ctl[0] == '\0') ctl = NULL;
  if (count == 0 || count > MAX_REQUESTS) {
    fprintf(stderr, "rpc: COUNT must be 1..%d\n", MAX_REQUESTS);
    return 2;
  }
  /* Outlive the consumers: the library calls back until close returns. */
  static struct server server;
  static struct client client;
  static double sent_at[MAX_REQUESTS];
  char request_queue[64], reply_key[64];
  snprintf(request_queue, sizeof request_queue, "resilient-amqp-rpc-%ld", (long)getpid());
  snprintf(reply_key, sizeof reply_key, "resilient-amqp-rpc-replies-%ld", (long)getpid());
  amqp_connection_handle server_conn, client_conn;
  amqp_queue_handle client_requests, replies;
  amqp_result rc;
  int status = 2;
  unsigned long resent = 0;
  bool restarted = false;

  if ((rc = amqp_connect(uri, NULL, &server_conn)) != AMQP_OK) {
    print_error("amqp_connect (server)", rc);
    return 2;
  }
  if ((rc = amqp_connect(uri, NULL, &client_conn)) != AMQP_OK) {
    print_error("amqp_connect (client)", rc);
    amqp_close_graceful(server_conn, 0, NULL);
    return 2;
  }
  /* The server: a durable request queue (it and its persistent requests
   * survive a broker restart), deleted by the broker after a minute unused. */
  const char *request_options = "prefetch=50&expires_ms=60000";
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
   * refuses the declare), and a server-named reply queue. The library needs
   * an exchange for a server-named queue (its own publishes would go there);
   * the server's replies come through the default exchange, by name. */
  rc = amqp_queue_open(client_conn, request_queue, NULL, NULL, request_options, &client_requests);
  if (rc != AMQP_OK) {
    print_error("amqp_queue_open (client requests)", rc);
    goto out;
  }
  rc = amqp_queue_open(client_conn, "", "amq.direct", reply_key, NULL, &replies);
  if (rc != AMQP_OK) {
    print_error("amqp_queue_open (replies)", rc);
    goto out;
  }
  if ((rc = amqp_consume(replies, on_reply, &client, 1)) != AMQP_OK) {
    print_error("amqp_consume (client)", rc);
    goto out;
  }

  double t0 = now_s(), deadline = t0 + limit_s;
  unsigned long half = ctl != NULL ? count / 2 : count;
  if (send_unanswered(&client, sent_at, client_requests, replies, 0, half, 0) < 0) goto out;
  if (!await_replies(&client, sent_at, client_requests, replies, half, deadline, &resent)) goto out;
  if (ctl != NULL) {
    /* The broker goes away: the second half is buffered meanwhile, with the
     * reply queue's old name (a reply to it will find no queue). */
    if (run_ctl(ctl, "stop_app") != 0) goto out;
    if (send_unanswered(&client, sent_at, client_requests, replies, half, count, 0) < 0) goto out;
    sleep_ms(1000);
    if (run_ctl(ctl, "start_app") != 0) goto out;
    restarted = true;
  }
  if (!await_replies(&client, sent_at, client_requests, replies, count, deadline, &resent)) goto out;
  double took = now_s() - t0;
  unsigned long got = atomic_load(&client.replies);
  printf("rpc: answered %lu of %lu requests in %.2f s%s (%lu sent again, %lu duplicates, "
         "%lu wrong)\n",
         got, count, took, restarted ? " across a broker restart" : "", resent,
         atomic_load(&client.duplicates), atomic_load(&client.wrong));
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
