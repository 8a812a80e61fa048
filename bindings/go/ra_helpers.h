/* C helpers of the Go binding (compiled by cgo with the package).
 *
 * Each wrapper calls one library function and, when it fails, reads the
 * error text in the same C call (amqp_last_error is per OS thread and a
 * goroutine may change threads between two cgo calls), or uses the
 * library's _e variant. Declarations only: the Go files include this. */
#ifndef RA_GO_HELPERS_H
#define RA_GO_HELPERS_H

#include <resilient_amqp.h>

/* A result and, on failure, the call's error text (malloc'd, the caller
   frees it; NULL on success). Returned by value, so Go passes no buffer. */
typedef struct ra_ret {
    amqp_result r;
    char *err;
} ra_ret;

ra_ret ra_connect(const char *uri, const char *options,
                       amqp_connection_handle *out);
ra_ret ra_conn_stats(amqp_connection_handle c, amqp_connection_stats *out);
ra_ret ra_queue_stats(amqp_queue_handle q, amqp_queue_stats *out);
ra_ret ra_queue_name(amqp_queue_handle q, char *buf, size_t bufcap, size_t *len);
ra_ret ra_publish(amqp_queue_handle q, const void *body, size_t len);
ra_ret ra_publish_tagged(amqp_queue_handle q, const void *body, size_t len,
                              uint64_t tag);
ra_ret ra_publish_message(amqp_queue_handle q, const void *body, size_t len,
                               const amqp_message *m);
ra_ret ra_consume_pull(amqp_queue_handle q);
/* Ends the queue's pull consumer alone (ABI 6). */
ra_ret ra_consume_pull_cancel(amqp_queue_handle q, uint32_t ms);
ra_ret ra_consume_start(amqp_queue_handle q);
ra_ret ra_settle(amqp_queue_handle q, uint64_t id, int disposition);
ra_ret ra_settle_many(amqp_queue_handle q, const uint64_t *ids, size_t n,
                           int disposition);
/* Frees `n` polled deliveries in one cgo call. */
void ra_free_many(const amqp_delivery **d, size_t n);
/* Switches the queue's delivery reports to pull mode (ABI 4). */
ra_ret ra_reports_pull(amqp_queue_handle q);
/* amqp_poll_reports with its error text read in the same call. */
ra_ret ra_poll_reports(amqp_queue_handle q, const amqp_delivery_report **out, size_t max,
                       uint32_t ms, size_t *count);
/* Callback-mode consumer (measured against pull mode by bench_test.go;
   not part of the API): every delivery calls the Go function raGoConsume
   on a library thread with `key` (a cgo.Handle). */
ra_ret ra_consume_callback(amqp_queue_handle q, uintptr_t key, uint32_t repeat, uint64_t *id);
ra_ret ra_consume_cancel(amqp_queue_handle q, uint64_t id, uint32_t ms);

/* Routes library logs to the Go function raGoLog (level OFF: none). */
amqp_result ra_set_log(int level);

ra_ret ra_wait_connected(amqp_connection_handle c, uint32_t ms);
ra_ret ra_close(amqp_connection_handle c, uint32_t ms, amqp_close_report *out);
ra_ret ra_queue_open(amqp_connection_handle c, const char *queue, const char *exchange,
                     const char *routing_key, const char *options, amqp_queue_handle *out);
ra_ret ra_publish_wait(amqp_queue_handle q, const void *body, size_t len, uint32_t ms);
ra_ret ra_stop(amqp_queue_handle q, uint32_t ms);
ra_ret ra_poll(amqp_queue_handle q, const amqp_delivery **out, size_t max,
               uint32_t ms, size_t *count);

#endif
