/* The public header compiles on its own, first, in strict C11
 * (-std=c11 -Wall -Wextra -Werror -pedantic), and declares exactly the
 * contract's types, values and signatures. Most checks are at compile time;
 * the program also links every function against the library. */
#include "resilient_amqp.h"

#include <stddef.h>
#include <stdio.h>

/* Types and enum values. */
_Static_assert(sizeof(amqp_connection_handle) == 8, "amqp_connection_handle is 64-bit");
_Static_assert(sizeof(amqp_queue_handle) == 8, "amqp_queue_handle is 64-bit");
_Static_assert((amqp_connection_handle)-1 > 0, "amqp_connection_handle is unsigned");
_Static_assert((amqp_queue_handle)-1 > 0, "amqp_queue_handle is unsigned");

_Static_assert(AMQP_OK == 0, "");
_Static_assert(AMQP_ERR_INVALID_ARGUMENT == 1, "");
_Static_assert(AMQP_ERR_INVALID_HANDLE == 2, "");
_Static_assert(AMQP_ERR_BUFFER_FULL == 3, "");
_Static_assert(AMQP_ERR_MESSAGE_TOO_LARGE == 4, "");
_Static_assert(AMQP_ERR_CLOSED == 5, "");
_Static_assert(AMQP_ERR_TIMEOUT == 6, "");
_Static_assert(AMQP_ERR_NOT_CONNECTED == 7, "");
_Static_assert(AMQP_ERR_BROKER == 8, "");
_Static_assert(AMQP_ERR_INTERNAL == 9, "");
_Static_assert(AMQP_ERR_STALE_DELIVERY == 10, "");
_Static_assert(AMQP_ERR_ALREADY_SETTLED == 11, "");
_Static_assert(AMQP_ABI_VERSION == 6, "");
_Static_assert(AMQP_ACK == 0x5A01, "");
_Static_assert(AMQP_REJECT == 0x5A02, "");
_Static_assert(AMQP_REQUEUE == 0x5A03, "");
_Static_assert(AMQP_DEFER == 0x5A04, "");
_Static_assert(AMQP_STATE_CONNECTING == 0, "");
_Static_assert(AMQP_STATE_CONNECTED == 1, "");
_Static_assert(AMQP_STATE_RECONNECTING == 2, "");
_Static_assert(AMQP_STATE_FAILED == 3, "");
_Static_assert(AMQP_STATE_CLOSED == 4, "");
_Static_assert(AMQP_LOG_OFF == 0, "");
_Static_assert(AMQP_LOG_ERROR == 1, "");
_Static_assert(AMQP_LOG_WARN == 2, "");
_Static_assert(AMQP_LOG_INFO == 3, "");
_Static_assert(AMQP_LOG_DEBUG == 4, "");

/* The delivery starts with body, body_len (the contract's fixed prefix). */
_Static_assert(offsetof(amqp_delivery, body) == 0, "body first");
_Static_assert(offsetof(amqp_delivery, body_len) == sizeof(const uint8_t *), "body_len second");

#define IS_TYPE(expr, T) _Generic((expr), T: 1, default: 0)
static const amqp_delivery d0;
_Static_assert(IS_TYPE(d0.body, const uint8_t *), "body is const uint8_t *");
_Static_assert(IS_TYPE(d0.body_len, size_t), "body_len is size_t");
_Static_assert(IS_TYPE(d0.delivery_tag, uint64_t), "delivery_tag is uint64_t");
_Static_assert(IS_TYPE(d0.redelivered, bool), "redelivered is bool");
_Static_assert(IS_TYPE(d0.exchange, const char *), "exchange is const char *");
_Static_assert(IS_TYPE(d0.exchange_len, size_t), "exchange_len is size_t");
_Static_assert(IS_TYPE(d0.routing_key, const char *), "routing_key is const char *");
_Static_assert(IS_TYPE(d0.routing_key_len, size_t), "routing_key_len is size_t");
_Static_assert(IS_TYPE(d0.queue, amqp_queue_handle), "queue is amqp_queue_handle");
_Static_assert(IS_TYPE(d0.delivery_id, uint64_t), "delivery_id is uint64_t");
_Static_assert(IS_TYPE(d0.message, const amqp_message *), "message (ABI 3)");
_Static_assert(IS_TYPE(d0.properties, const uint8_t *), "properties (ABI 3)");
_Static_assert(IS_TYPE(d0.properties_len, size_t), "properties_len (ABI 3)");

/* The message description (ABI 3) starts with its size; kinds and flags are fixed. */
static const amqp_message m0;
_Static_assert(offsetof(amqp_message, size) == 0, "size first");
_Static_assert(IS_TYPE(m0.size, size_t) && IS_TYPE(m0.routing_key, const char *) &&
                   IS_TYPE(m0.headers, const amqp_field *) && IS_TYPE(m0.header_count, size_t) &&
                   IS_TYPE(m0.delivery_mode, uint8_t) && IS_TYPE(m0.priority, uint8_t) &&
                   IS_TYPE(m0.present, uint16_t) && IS_TYPE(m0.timestamp, uint64_t) &&
                   IS_TYPE(m0.tag, uint64_t),
               "amqp_message fields");
_Static_assert(AMQP_VALUE_VOID == 0 && AMQP_VALUE_TABLE == 7 && AMQP_VALUE_DECIMAL == 16, "kinds");
_Static_assert(AMQP_PROP_CONTENT_TYPE == 0x8000 && AMQP_PROP_APP_ID == 0x0008, "property flags");
_Static_assert(AMQP_REPORT_UNROUTABLE == 6, "");

static const amqp_connection_stats cs0;
_Static_assert(offsetof(amqp_connection_stats, size) == 0, "size first");
_Static_assert(IS_TYPE(cs0.size, size_t), "size");
_Static_assert(IS_TYPE(cs0.state, amqp_connection_state), "state");
_Static_assert(IS_TYPE(cs0.connects, uint64_t), "connects");
_Static_assert(IS_TYPE(cs0.failed_attempts, uint64_t), "failed_attempts");
_Static_assert(IS_TYPE(cs0.consecutive_failures, uint64_t), "consecutive_failures");
_Static_assert(IS_TYPE(cs0.queues, uint64_t), "queues");
_Static_assert(IS_TYPE(cs0.consume_connects, uint64_t), "consume_connects");
_Static_assert(IS_TYPE(cs0.consume_failed_attempts, uint64_t), "consume_failed_attempts");

static const amqp_queue_stats qs0;
_Static_assert(offsetof(amqp_queue_stats, size) == 0, "size first");
_Static_assert(sizeof qs0 == sizeof(size_t) + 25 * sizeof(uint64_t), "size + 25 counters");
_Static_assert(IS_TYPE(qs0.spooled, uint64_t) && IS_TYPE(qs0.spool_restored, uint64_t) &&
                   IS_TYPE(qs0.spool_dropped_bytes, uint64_t),
               "ABI 5: the spool counters");
_Static_assert(IS_TYPE(qs0.buffered, uint64_t) && IS_TYPE(qs0.buffered_bytes, uint64_t) &&
                   IS_TYPE(qs0.in_flight, uint64_t) && IS_TYPE(qs0.published, uint64_t) &&
                   IS_TYPE(qs0.confirmed, uint64_t) && IS_TYPE(qs0.resent, uint64_t) &&
                   IS_TYPE(qs0.nacked, uint64_t) && IS_TYPE(qs0.delivered, uint64_t) &&
                   IS_TYPE(qs0.acked, uint64_t) && IS_TYPE(qs0.rejected, uint64_t) &&
                   IS_TYPE(qs0.requeued, uint64_t) && IS_TYPE(qs0.released, uint64_t) &&
                   IS_TYPE(qs0.failed, uint64_t) && IS_TYPE(qs0.expired, uint64_t) &&
                   IS_TYPE(qs0.refused, uint64_t) && IS_TYPE(qs0.queue_failed, uint64_t) &&
                   IS_TYPE(qs0.consume_refusals, uint64_t),
               "queue stats fields are uint64_t");

static const amqp_delivery_report dr0;
_Static_assert(offsetof(amqp_delivery_report, size) == 0, "size first");
_Static_assert(IS_TYPE(dr0.tag, uint64_t) && IS_TYPE(dr0.status, amqp_report_status) &&
                   IS_TYPE(dr0.attempts, uint32_t) && IS_TYPE(dr0.reply_code, uint32_t) &&
                   IS_TYPE(dr0.reason, const char *),
               "delivery report fields");

/* Exact signatures: assigning to a pointer of the contract's type is an
 * error (-Werror=incompatible-pointer-types) when they differ. */
static amqp_disposition my_consume(const amqp_delivery *d, void *ud) {
  (void)d;
  (void)ud;
  return AMQP_ACK;
}
static void my_log(amqp_log_level level, const char *message, void *ud) {
  (void)level;
  (void)message;
  (void)ud;
}

int main(void) {
  amqp_result (*connect)(const char *, const char *, amqp_connection_handle *) = amqp_connect;
  amqp_result (*wait_connected)(amqp_connection_handle, uint32_t) = amqp_wait_connected;
  amqp_result (*queue_open)(amqp_connection_handle, const char *, const char *, const char *,
                            const char *, amqp_queue_handle *) = amqp_queue_open;
  amqp_result (*publish)(amqp_queue_handle, const void *, size_t) = amqp_publish;
  amqp_result (*consume)(amqp_queue_handle, amqp_consume_fn, void *, uint32_t) = amqp_consume;
  amqp_result (*consume_stop)(amqp_queue_handle) = amqp_consume_stop;
  amqp_result (*consume_start)(amqp_queue_handle) = amqp_consume_start;
  amqp_result (*close_graceful)(amqp_connection_handle, uint32_t, uint64_t *) = amqp_close_graceful;
  const char *(*result_str)(amqp_result) = amqp_result_str;
  size_t (*last_error)(char *, size_t) = amqp_last_error;
  amqp_result (*connection_get_stats)(amqp_connection_handle, amqp_connection_stats *) =
      amqp_connection_get_stats;
  amqp_result (*queue_get_stats)(amqp_queue_handle, amqp_queue_stats *) = amqp_queue_get_stats;
  amqp_result (*set_log_callback)(amqp_log_fn, amqp_log_level, void *) = amqp_set_log_callback;
  const char *(*state_str)(amqp_connection_state) = amqp_connection_state_str;
  amqp_consume_fn cfn = my_consume;
  amqp_log_fn lfn = my_log;

  void *all[] = {(void *)&connect,      (void *)&wait_connected, (void *)&queue_open,
                 (void *)&publish,      (void *)&consume,        (void *)&consume_stop,
                 (void *)&consume_start, (void *)&close_graceful, (void *)&result_str,
                 (void *)&last_error,   (void *)&connection_get_stats, (void *)&queue_get_stats,
                 (void *)&set_log_callback, (void *)&state_str, (void *)&cfn, (void *)&lfn};
  (void)all;
  if (connect == NULL || result_str(AMQP_OK) == NULL || state_str(AMQP_STATE_CLOSED) == NULL ||
      cfn(&d0, NULL) != AMQP_ACK) {
    printf("FAIL header_c11: a function is missing\n");
    return 1;
  }
  printf("PASS header_c11_types_values_signatures\n");
  return 0;
}
