/* C helpers of the Go binding: see ra_helpers.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "ra_helpers.h"
#include "_cgo_export.h"

#define ERRCAP 1024

/* A failure of a plain call: its text from this thread's amqp_last_error,
   read in the same C call as the failing one. */
static ra_ret last(amqp_result r) {
    ra_ret out = { r, NULL };
    if (r != AMQP_OK) {
        char buf[ERRCAP];
        buf[0] = 0;
        amqp_last_error(buf, sizeof buf);
        out.err = strdup(buf);
    }
    return out;
}

/* A failure of an _e call: its text already in `buf`. */
static ra_ret own(amqp_result r, const char *buf) {
    ra_ret out = { r, NULL };
    if (r != AMQP_OK) out.err = strdup(buf);
    return out;
}

ra_ret ra_connect(const char *uri, const char *options, amqp_connection_handle *out) {
    return last(amqp_connect(uri, options, out));
}

ra_ret ra_conn_stats(amqp_connection_handle c, amqp_connection_stats *out) {
    out->size = sizeof *out;
    return last(amqp_connection_get_stats(c, out));
}

ra_ret ra_queue_stats(amqp_queue_handle q, amqp_queue_stats *out) {
    out->size = sizeof *out;
    return last(amqp_queue_get_stats(q, out));
}

ra_ret ra_queue_name(amqp_queue_handle q, char *buf, size_t bufcap, size_t *len) {
    return last(amqp_queue_name(q, buf, bufcap, len));
}

ra_ret ra_publish(amqp_queue_handle q, const void *body, size_t len) {
    amqp_result r = amqp_publish(q, body, len);
    if (r == AMQP_OK) return (ra_ret){ r, NULL };
    return last(r);
}

ra_ret ra_publish_tagged(amqp_queue_handle q, const void *body, size_t len, uint64_t tag) {
    return last(amqp_publish_tagged(q, body, len, tag));
}

ra_ret ra_publish_message(amqp_queue_handle q, const void *body, size_t len,
                          const amqp_message *m) {
    return last(amqp_publish_message(q, body, len, m));
}

ra_ret ra_consume_pull(amqp_queue_handle q) {
    return last(amqp_consume_pull(q, NULL));
}

ra_ret ra_consume_pull_cancel(amqp_queue_handle q, uint32_t ms) {
    return last(amqp_consume_pull_cancel(q, ms));
}

ra_ret ra_consume_start(amqp_queue_handle q) {
    return last(amqp_consume_start(q));
}

ra_ret ra_settle(amqp_queue_handle q, uint64_t id, int disposition) {
    return last(amqp_settle(q, id, (amqp_disposition)disposition));
}

ra_ret ra_settle_many(amqp_queue_handle q, const uint64_t *ids, size_t n, int disposition) {
    return last(amqp_settle_many(q, ids, n, (amqp_disposition)disposition, NULL));
}

void ra_free_many(const amqp_delivery **d, size_t n) {
    for (size_t i = 0; i < n; i++) {
        amqp_delivery_free(d[i]);
        d[i] = NULL;
    }
}

ra_ret ra_reports_pull(amqp_queue_handle q) {
    return last(amqp_reports_pull(q, NULL));
}

ra_ret ra_poll_reports(amqp_queue_handle q, const amqp_delivery_report **out, size_t max,
                       uint32_t ms, size_t *count) {
    amqp_result r = amqp_poll_reports(q, out, max, ms, count);
    if (r == AMQP_OK || r == AMQP_ERR_TIMEOUT) return (ra_ret){ r, NULL };
    return last(r);
}

static void ra_log_tramp(amqp_log_level level, const char *message, void *userdata) {
    (void)userdata;
    raGoLog((int)level, (char *)message);
}

amqp_result ra_set_log(int level) {
    if (level <= 0) return amqp_set_log_callback(NULL, AMQP_LOG_OFF, NULL);
    return amqp_set_log_callback(ra_log_tramp, (amqp_log_level)level, NULL);
}

ra_ret ra_wait_connected(amqp_connection_handle c, uint32_t ms) {
    char buf[ERRCAP] = "";
    return own(amqp_wait_connected_e(c, ms, buf, sizeof buf), buf);
}

ra_ret ra_close(amqp_connection_handle c, uint32_t ms, amqp_close_report *out) {
    char buf[ERRCAP] = "";
    out->size = sizeof *out;
    return own(amqp_close_ex_e(c, ms, out, buf, sizeof buf), buf);
}

ra_ret ra_queue_open(amqp_connection_handle c, const char *queue, const char *exchange,
                     const char *routing_key, const char *options, amqp_queue_handle *out) {
    char buf[ERRCAP] = "";
    return own(amqp_queue_open_e(c, queue, exchange, routing_key, options, out, buf, sizeof buf),
               buf);
}

ra_ret ra_publish_wait(amqp_queue_handle q, const void *body, size_t len, uint32_t ms) {
    char buf[ERRCAP];
    amqp_result r = amqp_publish_wait_e(q, body, len, ms, buf, sizeof buf);
    if (r == AMQP_OK) return (ra_ret){ r, NULL };
    return own(r, buf);
}

ra_ret ra_stop(amqp_queue_handle q, uint32_t ms) {
    char buf[ERRCAP] = "";
    return own(amqp_consume_stop_timeout_e(q, ms, buf, sizeof buf), buf);
}

ra_ret ra_poll(amqp_queue_handle q, const amqp_delivery **out, size_t max,
               uint32_t ms, size_t *count) {
    char buf[ERRCAP];
    amqp_result r = amqp_poll_e(q, out, max, ms, count, buf, sizeof buf);
    if (r == AMQP_OK || r == AMQP_ERR_TIMEOUT) return (ra_ret){ r, NULL };
    return own(r, buf);
}

static amqp_disposition ra_consume_tramp(const amqp_delivery *d, void *userdata) {
    return (amqp_disposition)raGoConsume((amqp_delivery *)d, (uintptr_t)userdata);
}

ra_ret ra_consume_callback(amqp_queue_handle q, uintptr_t key, uint32_t repeat, uint64_t *id) {
    return last(amqp_consume_ex(q, ra_consume_tramp, (void *)key, NULL, repeat, id));
}

ra_ret ra_consume_cancel(amqp_queue_handle q, uint64_t id, uint32_t ms) {
    char buf[ERRCAP] = "";
    return own(amqp_consume_cancel_e(q, id, ms, buf, sizeof buf), buf);
}
