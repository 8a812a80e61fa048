/* Pull mode from C, the way an event loop uses it.
 *
 * - amqp_consume_pull hands out a descriptor; an event loop waits on it
 *   with poll(2) and, on readable, calls amqp_poll with timeout 0 until
 *   AMQP_ERR_TIMEOUT, settling each batch with amqp_settle_many: every
 *   message published arrives exactly once, and the descriptor is not
 *   readable once everything was taken.
 * - amqp_poll_wake from another thread ends a blocked amqp_poll.
 * - close wakes a blocked amqp_poll with AMQP_ERR_CLOSED and the descriptor
 *   stays readable.
 *
 * Needs RESILIENT_AMQP_TEST_URI.
 */
#include "ra_test.h"

#include <poll.h>

#define N 600
#define BATCH 32

static int readable(int fd, int timeout_ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int n = poll(&p, 1, timeout_ms);
  return n == 1 && (p.revents & POLLIN) != 0;
}

struct poller {
  amqp_queue_handle q;
  uint32_t timeout_ms;
  amqp_result rc;
  size_t count;
  uint64_t took_ms;
};

static void *blocked_poll(void *arg) {
  struct poller *p = arg;
  const amqp_delivery *out[4];
  uint64_t t0 = ra_now_ms();
  p->rc = amqp_poll(p->q, out, 4, p->timeout_ms, &p->count);
  p->took_ms = ra_now_ms() - t0;
  return NULL;
}

/* The event loop: waits on the descriptor, drains with timeout 0, settles. */
static void event_loop(amqp_queue_handle q, int fd) {
  static unsigned char seen[N];
  unsigned got = 0, dups = 0, bad = 0, settle_failed = 0, batches = 0;
  uint64_t deadline = ra_now_ms() + ra_scaled_ms(30000);
  while (got < N && ra_now_ms() < deadline) {
    if (!readable(fd, 1000)) continue;
    for (;;) {
      const amqp_delivery *out[BATCH];
      uint64_t ids[BATCH];
      amqp_result results[BATCH];
      size_t count = 99;
      amqp_result rc = amqp_poll(q, out, BATCH, 0, &count);
      if (rc == AMQP_ERR_TIMEOUT) {
        if (count != 0) bad++;
        break;
      }
      if (rc != AMQP_OK) {
        bad++;
        break;
      }
      for (size_t i = 0; i < count; i++) {
        unsigned n = 0;
        if (out[i]->body_len == 8 && sscanf((const char *)out[i]->body, "m%06u", &n) == 1 &&
            n < N) {
          if (seen[n]++) dups++;
        } else {
          bad++;
        }
        ids[i] = out[i]->delivery_id;
        got++;
      }
      /* batches alternately freed one by one and at once (ABI 4): a leak
       * fails the memcheck run */
      if (batches++ % 2 == 0) {
        for (size_t i = 0; i < count; i++) amqp_delivery_free(out[i]);
      } else {
        amqp_delivery_free_many(out, count);
      }
      if (amqp_settle_many(q, ids, count, AMQP_ACK, results) != AMQP_OK) settle_failed++;
    }
  }
  CHECK("event loop: every message once", got == N && dups == 0 && bad == 0,
        "got %u of %d, %u duplicates, %u bad", got, N, dups, bad);
  CHECK("event loop: every batch settled", settle_failed == 0, "%u failed", settle_failed);
  CHECK("descriptor not readable once drained", !readable(fd, 200), "still readable");
}

int main(void) {
  ra_init("pull_mode", 120);
  const char *uri = ra_broker_uri();
  amqp_connection_handle conn;
  amqp_queue_handle q;
  char name[128];
  ra_unique_name(name, sizeof name, "ra-c-pull");
  if (!CHECK_RC("connect", amqp_connect(uri, NULL, &conn), AMQP_OK)) return 1;
  CHECK_RC("wait_connected", amqp_wait_connected(conn, 10000), AMQP_OK);
  if (!CHECK_RC("queue_open", amqp_queue_open(conn, name, NULL, NULL, "prefetch=50", &q),
                AMQP_OK))
    return 1;

  int fd = -1, fd2 = -1;
  CHECK_RC("consume_pull", amqp_consume_pull(q, &fd), AMQP_OK);
  CHECK_RC("consume_pull again", amqp_consume_pull(q, &fd2), AMQP_OK);
  CHECK("a new descriptor per call", fd > 2 && fd2 > 2 && fd != fd2, "fd %d, fd2 %d", fd, fd2);
  close(fd2);
  CHECK("not readable while nothing waits", !readable(fd, 100), "readable");

  char body[16];
  for (unsigned i = 0; i < N; i++) {
    snprintf(body, sizeof body, "m%06u", i);
    if (amqp_publish(q, body, 7 + 1) != AMQP_OK) {
      ra_fail("publish", "%s", ra_last_error_str());
      return 1;
    }
  }
  event_loop(q, fd);

  /* amqp_poll_wake from another thread. */
  struct poller p = {.q = q, .timeout_ms = 20000};
  pthread_t t;
  pthread_create(&t, NULL, blocked_poll, &p);
  ra_sleep_ms(200);
  CHECK_RC("poll_wake", amqp_poll_wake(q), AMQP_OK);
  pthread_join(t, NULL);
  CHECK("poll_wake ends a blocked poll", p.rc == AMQP_ERR_TIMEOUT && p.count == 0 &&
        p.took_ms < ra_scaled_ms(5000), "%s after %" PRIu64 " ms", amqp_result_str(p.rc),
        p.took_ms);

  /* Close wakes a blocked poll with AMQP_ERR_CLOSED. */
  struct poller c = {.q = q, .timeout_ms = 20000};
  pthread_create(&t, NULL, blocked_poll, &c);
  ra_sleep_ms(200);
  uint64_t unsent = 99;
  CHECK_RC("close", amqp_close_graceful(conn, 10000, &unsent), AMQP_OK);
  pthread_join(t, NULL);
  CHECK("close wakes a blocked poll", c.rc == AMQP_ERR_CLOSED && c.took_ms < ra_scaled_ms(10000),
        "%s after %" PRIu64 " ms", amqp_result_str(c.rc), c.took_ms);
  CHECK("readable for good after close", readable(fd, 0) && readable(fd, 0), "not readable");
  close(fd);
  return ra_failures == 0 ? 0 : 1;
}
