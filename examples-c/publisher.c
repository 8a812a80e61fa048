/* publisher.c -- publish N messages to a queue with resilient-amqp.
 *
 *   usage: publisher [URI] [QUEUE] [COUNT]
 *     URI    default: $DEMO_URI, then $RESILIENT_AMQP_TEST_URI,
 *            then amqp://guest:guest@127.0.0.1:5672/%2f
 *     QUEUE  default: resilient-amqp-example
 *     COUNT  default: 10000
 *
 *   build: cc -std=c11 -Wall -Wextra -Iinclude examples-c/publisher.c \
 *             -Ltarget/release -lresilient_amqp -Wl,-rpath,$PWD/target/release -o publisher
 *
 * What it shows:
 *   - amqp_connect returns at once; the library connects (and reconnects) in
 *     the background, so publishing works even before the broker is reachable.
 *   - amqp_publish copies the body into the queue's buffer and never blocks;
 *     a message leaves the buffer only when the broker confirmed it.
 *   - A full buffer is back-pressure: amqp_publish returns AMQP_ERR_BUFFER_FULL
 *     at once; amqp_publish_wait (used here) sleeps until confirms make room,
 *     up to its timeout, then returns AMQP_ERR_BUFFER_FULL (try again later).
 *   - amqp_close_graceful waits for the confirms and tells how many messages
 *     were not confirmed in time ("unsent").
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resilient_amqp.h"

/* amqp_last_error works like snprintf: ask for the length, then copy. */
static void print_error(const char *what, amqp_result rc) {
  size_t len = amqp_last_error(NULL, 0);
  char *msg = malloc(len + 1);
  if (msg != NULL) amqp_last_error(msg, len + 1);
  fprintf(stderr, "publisher: %s failed: %s: %s\n", what, amqp_result_str(rc),
          msg != NULL ? msg : "(out of memory)");
  free(msg);
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
  long count = argc > 3 ? strtol(argv[3], NULL, 10) : 10000;
  amqp_connection_handle conn;
  amqp_queue_handle q;
  amqp_result rc;
  long sent = 0, full_timeouts = 0;

  /* 1. Connect. Options tune the reconnect backoff (see the README). */
  rc = amqp_connect(uri, "reconnect_delay_ms=100&reconnect_delay_max_ms=2000", &conn);
  if (rc != AMQP_OK) {
    print_error("amqp_connect", rc);
    return 2;
  }

  /* Optional: wait for the first connection, only to report it. Publishing
   * would work without it (messages wait in the buffer). */
  if (amqp_wait_connected(conn, 5000) != AMQP_OK)
    fprintf(stderr, "publisher: not connected yet, publishing into the buffer anyway\n");

  /* 2. Open the queue: declared durable (the default) on the default
   *    exchange, messages persistent (the default). */
  rc = amqp_queue_open(conn, queue, NULL, NULL, NULL, &q);
  if (rc != AMQP_OK) {
    print_error("amqp_queue_open", rc);
    amqp_close_graceful(conn, 0, NULL);
    return 2;
  }

  /* 3. Publish. */
  while (sent < count) {
    char body[64];
    int len = snprintf(body, sizeof body, "message %ld", sent);
    rc = amqp_publish_wait(q, body, (size_t)len, 1000);
    if (rc == AMQP_OK) {
      sent++;
    } else if (rc == AMQP_ERR_BUFFER_FULL) {
      full_timeouts++; /* still full after 1 s: the broker is away; keep waiting */
    } else {
      print_error("amqp_publish", rc);
      break;
    }
  }

  /* 4. Close: waits up to 30 s for every buffered message to be confirmed.
   *    The handles are freed in every case. */
  uint64_t unsent = 0;
  rc = amqp_close_graceful(conn, 30000, &unsent);
  printf("published %ld messages to \"%s\" (%ld waits of 1 s on a full buffer); close: %s, unsent: %llu\n",
         sent, queue, full_timeouts, amqp_result_str(rc), (unsigned long long)unsent);
  return (rc == AMQP_OK && unsent == 0 && sent == count) ? 0 : 1;
}
