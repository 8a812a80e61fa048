/* Our header and rabbitmq-c's <amqp.h> in one translation unit, both
 * libraries linked into one program (-lrabbitmq first): no name clashes at
 * compile time, and at run time every function of ours resolves to our
 * library, not to librabbitmq.
 *
 * Compiled twice by tests/c_programs.rs: rabbitmq-c's header first, and with
 * -DRA_OURS_FIRST our header first. No broker needed.
 */
#define _GNU_SOURCE 1

#ifdef RA_OURS_FIRST
#include "resilient_amqp.h"
#include <amqp.h>
#include <amqp_tcp_socket.h>
#else
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include "resilient_amqp.h"
#endif

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int failures;

/* Looks the name up the way the dynamic linker resolves it for this program
 * and reports which library provides it. */
static const char *provider(const char *name) {
  Dl_info info;
  void *sym = dlsym(RTLD_DEFAULT, name);
  memset(&info, 0, sizeof info);
  if (sym == NULL || dladdr(sym, &info) == 0) return NULL;
  return info.dli_fname;
}

static void check_ours(const char *name) {
  const char *lib = provider(name);
  if (lib == NULL) {
    printf("FAIL resolves_%s: dladdr found nothing\n", name);
    failures++;
  } else if (strstr(lib, "libresilient_amqp") == NULL) {
    printf("FAIL resolves_%s: resolved in %s (symbol clash)\n", name, lib);
    failures++;
  } else {
    printf("PASS resolves_%s\n", name);
  }
}

/* (fn) makes sure the header declares it; the lookup is by name. */
#define OURS(fn) ((void)(fn), check_ours(#fn))

int main(void) {
  /* rabbitmq-c works */
  const char *v = amqp_version();
  amqp_connection_state_t rconn = amqp_new_connection();
  amqp_socket_t *sock = rconn ? amqp_tcp_socket_new(rconn) : NULL;
  if (v == NULL || rconn == NULL || sock == NULL) {
    printf("FAIL rabbitmq_c_works: version %s, connection %p, socket %p\n", v ? v : "NULL",
           (void *)rconn, (void *)sock);
    failures++;
  } else {
    printf("PASS rabbitmq_c_works\n");
    printf("# rabbitmq-c %s\n", v);
  }
  if (rconn) amqp_destroy_connection(rconn);
  {
    const char *lib = provider("amqp_version");
    if (lib != NULL && strstr(lib, "librabbitmq") != NULL) {
      printf("PASS rabbitmq_c_resolves_to_librabbitmq\n");
    } else {
      printf("FAIL rabbitmq_c_resolves_to_librabbitmq\n");
      failures++;
    }
  }

  /* ours works, from our library */
  {
    amqp_connection_handle c = 0;
    amqp_queue_handle q = 0;
    uint64_t unsent = 99;
    amqp_result r1 = amqp_connect("amqp://guest:guest@127.0.0.1:1/%2f", NULL, &c);
    amqp_result r2 = amqp_queue_open(c, "ra-with-rabbitmq-c", NULL, NULL, NULL, &q);
    amqp_result r3 = amqp_publish(q, "x", 1);
    amqp_result r4 = amqp_close_graceful(c, 100, &unsent);
    if (r1 == AMQP_OK && r2 == AMQP_OK && r3 == AMQP_OK && r4 == AMQP_ERR_TIMEOUT && unsent == 1) {
      printf("PASS resilient_amqp_works\n");
    } else {
      printf("FAIL resilient_amqp_works: %s %s %s %s unsent=%llu\n", amqp_result_str(r1),
             amqp_result_str(r2), amqp_result_str(r3), amqp_result_str(r4),
             (unsigned long long)unsent);
      failures++;
    }
  }
  OURS(amqp_connect);
  OURS(amqp_wait_connected);
  OURS(amqp_queue_open);
  OURS(amqp_publish);
  OURS(amqp_consume);
  OURS(amqp_consume_stop);
  OURS(amqp_consume_start);
  OURS(amqp_close_graceful);
  OURS(amqp_result_str);
  OURS(amqp_last_error);
  OURS(amqp_connection_get_stats);
  OURS(amqp_queue_get_stats);
  OURS(amqp_set_log_callback);
  OURS(amqp_connection_state_str);
  return failures == 0 ? 0 : 1;
}
