/* outage_demo.c -- no message is lost while the broker goes away and comes back.
 *
 *   usage: outage_demo [URI] [COUNT] [SECONDS]
 *     URI      default: $DEMO_URI, then $RESILIENT_AMQP_TEST_URI
 *     COUNT    messages to publish (default 20000)
 *     SECONDS  how long publishing takes, at a steady pace (default 7)
 *   environment:
 *     DEMO_CTL (or RESILIENT_AMQP_TEST_CTL): a command prefix that runs
 *     rabbitmqctl against the broker, e.g. "scripts/broker.sh ctl". The demo
 *     runs "$DEMO_CTL stop_app" about 2 s into publishing and
 *     "$DEMO_CTL start_app" 3 s later.
 *
 * What happens:
 *   1. connect, (re)create the durable queue "resilient-amqp-demo", start 2
 *      consumers that record which sequence numbers ("msg-000123") arrive;
 *   2. publish COUNT messages at a steady pace from the main thread, while a
 *      second thread stops and restarts the broker application;
 *      amqp_publish never blocks: during the outage messages wait in the
 *      library's buffer (AMQP_ERR_BUFFER_FULL, when it fills, is retried
 *      after a short sleep and counted);
 *   3. after the broker is back, unconfirmed messages are sent again and the
 *      consumers restart; the demo waits until every message arrived (60 s
 *      at most), closes gracefully and prints a summary.
 *
 * Exit status 0 only when nothing is missing, nothing is unsent, and the
 * outage really happened (at least one reconnect).
 */
#define _GNU_SOURCE 1

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "resilient_amqp.h"

#define QUEUE "resilient-amqp-demo"
#define OUTAGE_AT_MS 2000   /* stop_app this long after publishing starts */
#define OUTAGE_FOR_MS 3000  /* start_app this long after stop_app returned */
#define DRAIN_LIMIT_MS 60000
#define CONNECT_OPTIONS "reconnect_delay_ms=100&reconnect_delay_max_ms=1000"
#define QUEUE_OPTIONS "max_buffered=10000" /* small enough to show back-pressure */

/* ---------------------------------------------------------------- time --- */

static uint64_t t_start_ms;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double elapsed_s(void) { return (double)(now_ms() - t_start_ms) / 1000.0; }

static void sleep_ms(uint64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void sleep_until_ms(uint64_t t) {
  uint64_t n = now_ms();
  if (t > n) sleep_ms(t - n);
}

/* ------------------------------------------------------------ consumer --- */

/* One counter per sequence number: 0 = missing, 1 = received, >1 = duplicates. */
static atomic_uchar *seen;
static uint32_t total;
static atomic_uint distinct, duplicates, deliveries, foreign;

static amqp_disposition on_message(const amqp_delivery *d, void *userdata) {
  char tmp[32];
  unsigned seq;
  size_t len = d->body_len < sizeof tmp - 1 ? d->body_len : sizeof tmp - 1;
  (void)userdata;
  if (len > 0) memcpy(tmp, d->body, len); /* the body is not NUL-terminated */
  tmp[len] = '\0';
  atomic_fetch_add(&deliveries, 1);
  if (sscanf(tmp, "msg-%u", &seq) != 1 || seq >= total) {
    atomic_fetch_add(&foreign, 1);
    return AMQP_REJECT;
  }
  unsigned char before = atomic_fetch_add(&seen[seq], 1);
  if (before == 0)
    atomic_fetch_add(&distinct, 1);
  else
    atomic_fetch_add(&duplicates, 1);
  if (before == 250) atomic_store(&seen[seq], 2); /* keep it from wrapping to 0 */
  return AMQP_ACK;
}

/* ----------------------------------------------------------- ctl thread --- */

static const char *ctl;
static uint64_t publish_start_ms;
static atomic_int ctl_failures;
static atomic_bool outage_over;

static int run_ctl(const char *what) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s %s 1>&2", ctl, what);
  printf("[%6.2fs] running: %s %s\n", elapsed_s(), ctl, what);
  int st = system(cmd);
  int rc = (st != -1 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
  printf("[%6.2fs] %s %s (exit %d)\n", elapsed_s(), what, rc == 0 ? "done" : "FAILED", rc);
  if (rc != 0) atomic_fetch_add(&ctl_failures, 1);
  return rc;
}

static void *outage_thread(void *arg) {
  (void)arg;
  sleep_until_ms(publish_start_ms + OUTAGE_AT_MS);
  run_ctl("stop_app");
  sleep_ms(OUTAGE_FOR_MS);
  run_ctl("start_app");
  atomic_store(&outage_over, true);
  return NULL;
}

/* ------------------------------------------------------- progress thread --- */

static amqp_connection_handle conn;
static amqp_queue_handle queue;
static atomic_bool stop_progress;
static atomic_ulong published, full_retries;

static void print_progress(void) {
  amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
  amqp_queue_stats qs = {.size = sizeof(amqp_queue_stats)};
  memset(&cs, 0, sizeof cs);
  cs.size = sizeof cs;
  memset(&qs, 0, sizeof qs);
  qs.size = sizeof qs;
  if (amqp_connection_get_stats(conn, &cs) != AMQP_OK || amqp_queue_get_stats(queue, &qs) != AMQP_OK)
    return;
  printf("[%6.2fs] %-12s published %6lu  buffered %6" PRIu64 "  in flight %5" PRIu64
         "  confirmed %6" PRIu64 "  received %6u (+%u dup)  full-retries %lu  connects %" PRIu64 "\n",
         elapsed_s(), amqp_connection_state_str(cs.state), atomic_load(&published), qs.buffered,
         qs.in_flight, qs.confirmed, atomic_load(&distinct), atomic_load(&duplicates),
         atomic_load(&full_retries), cs.connects);
}

static void *progress_thread(void *arg) {
  (void)arg;
  while (!atomic_load(&stop_progress)) {
    print_progress();
    sleep_ms(500);
  }
  return NULL;
}

/* ------------------------------------------------------------------ main --- */

static void fail_call(const char *what, amqp_result rc) {
  char msg[512];
  amqp_last_error(msg, sizeof msg);
  fprintf(stderr, "outage_demo: %s: %s: %s\n", what, amqp_result_str(rc), msg);
}

static const char *env2(const char *a, const char *b) {
  const char *v = getenv(a);
  if (v == NULL || v[0] == '\0') v = getenv(b);
  return (v != NULL && v[0] != '\0') ? v : NULL;
}

int main(int argc, char **argv) {
  const char *uri = argc > 1 ? argv[1] : env2("DEMO_URI", "RESILIENT_AMQP_TEST_URI");
  long count = argc > 2 ? strtol(argv[2], NULL, 10) : 20000;
  double seconds = argc > 3 ? strtod(argv[3], NULL) : 7.0;
  amqp_result rc;
  pthread_t outage, progress;

  setvbuf(stdout, NULL, _IOLBF, 0);
  ctl = env2("DEMO_CTL", "RESILIENT_AMQP_TEST_CTL");
  if (uri == NULL || ctl == NULL || count <= 0 || count > 10000000 || seconds <= 0) {
    fprintf(stderr,
            "usage: outage_demo [URI] [COUNT] [SECONDS]\n"
            "  needs DEMO_URI (or RESILIENT_AMQP_TEST_URI, or URI) and DEMO_CTL (or\n"
            "  RESILIENT_AMQP_TEST_CTL), e.g. from: eval \"$(bash scripts/broker.sh env)\"\n");
    return 2;
  }
  total = (uint32_t)count;
  seen = calloc(total, sizeof *seen);
  if (seen == NULL) return 2;
  t_start_ms = now_ms();

  /* A fresh queue: delete what an earlier run left (an error when there is
   * none is fine). */
  {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s delete_queue %s >/dev/null 2>&1", ctl, QUEUE);
    if (system(cmd) == -1) fprintf(stderr, "outage_demo: could not run %s\n", ctl);
  }

  rc = amqp_connect(uri, CONNECT_OPTIONS, &conn);
  if (rc != AMQP_OK) {
    fail_call("amqp_connect", rc);
    return 2;
  }
  rc = amqp_wait_connected(conn, 15000);
  if (rc != AMQP_OK) {
    fail_call("amqp_wait_connected", rc);
    return 2;
  }
  rc = amqp_queue_open(conn, QUEUE, NULL, NULL, QUEUE_OPTIONS, &queue); /* durable, persistent */
  if (rc != AMQP_OK) {
    fail_call("amqp_queue_open", rc);
    return 2;
  }
  rc = amqp_consume(queue, on_message, NULL, 2);
  if (rc != AMQP_OK) {
    fail_call("amqp_consume", rc);
    return 2;
  }
  printf("[%6.2fs] connected to %s; publishing %ld messages over %.1f s; "
         "the broker stops %.1f s in, for %.1f s\n",
         elapsed_s(), uri, count, seconds, OUTAGE_AT_MS / 1000.0, OUTAGE_FOR_MS / 1000.0);

  publish_start_ms = now_ms();
  pthread_create(&progress, NULL, progress_thread, NULL);
  pthread_create(&outage, NULL, outage_thread, NULL);

  /* Publish at a steady pace: message i is due at start + i * period. */
  {
    double period_ms = seconds * 1000.0 / (double)count;
    char body[32];
    for (long i = 0; i < count;) {
      uint64_t due = publish_start_ms + (uint64_t)((double)i * period_ms);
      if (now_ms() < due) sleep_until_ms(due);
      int len = snprintf(body, sizeof body, "msg-%06ld", i);
      rc = amqp_publish(queue, body, (size_t)len);
      if (rc == AMQP_OK) {
        atomic_fetch_add(&published, 1);
        i++;
      } else if (rc == AMQP_ERR_BUFFER_FULL) {
        atomic_fetch_add(&full_retries, 1);
        sleep_ms(5);
      } else {
        fail_call("amqp_publish", rc);
        break;
      }
    }
  }
  printf("[%6.2fs] publishing done (%lu published, %lu buffer-full retries)\n", elapsed_s(),
         atomic_load(&published), atomic_load(&full_retries));

  /* Wait for the outage to end and every message to arrive. */
  pthread_join(outage, NULL);
  {
    uint64_t deadline = now_ms() + DRAIN_LIMIT_MS;
    while (atomic_load(&distinct) < total && now_ms() < deadline) sleep_ms(20);
  }
  printf("[%6.2fs] %s\n", elapsed_s(),
         atomic_load(&distinct) == total ? "all messages received" : "gave up waiting");
  sleep_ms(300); /* late duplicates still count */

  atomic_store(&stop_progress, true);
  pthread_join(progress, NULL);
  print_progress();

  /* Final numbers, read before close frees the handles. */
  amqp_connection_stats cs = {.size = sizeof(amqp_connection_stats)};
  amqp_queue_stats qs = {.size = sizeof(amqp_queue_stats)};
  memset(&cs, 0, sizeof cs);
  cs.size = sizeof cs;
  memset(&qs, 0, sizeof qs);
  qs.size = sizeof qs;
  amqp_connection_get_stats(conn, &cs);
  amqp_queue_get_stats(queue, &qs);

  uint64_t unsent = 0;
  rc = amqp_close_graceful(conn, 10000, &unsent);
  if (rc != AMQP_OK) fail_call("amqp_close_graceful", rc);

  unsigned missing = 0;
  for (uint32_t i = 0; i < total; i++) missing += atomic_load(&seen[i]) == 0;
  uint64_t reconnects = cs.connects > 0 ? cs.connects - 1 : 0;

  printf("\n==== summary ====\n");
  printf("published           %lu\n", atomic_load(&published));
  printf("confirmed           %" PRIu64 "\n", qs.confirmed);
  printf("delivered distinct  %u\n", atomic_load(&distinct));
  printf("duplicates          %u\n", atomic_load(&duplicates));
  printf("missing             %u\n", missing);
  printf("unsent              %" PRIu64 "\n", unsent);
  printf("reconnects          %" PRIu64 "\n", reconnects);
  printf("resent              %" PRIu64 "\n", qs.resent);
  printf("buffer-full retries %lu\n", atomic_load(&full_retries));
  printf("other messages      %u\n", atomic_load(&foreign));
  printf("elapsed             %.2f s\n", elapsed_s());

  int status = 0;
  if (missing != 0 || unsent != 0) status = 1;
  if (atomic_load(&ctl_failures) != 0) {
    printf("the broker could not be stopped/started: the outage did not happen as planned\n");
    status = 1;
  } else if (reconnects == 0) {
    printf("no reconnect was seen: the outage was not observed\n");
    status = 1;
  }
  printf("%s\n", status == 0 ? "RESULT: OK, nothing lost" : "RESULT: FAILED");
  free(seen);
  return status;
}
