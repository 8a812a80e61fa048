// The public header compiles on its own in C++17 (-Wall -Wextra -Werror),
// declares the functions with C linkage (this links against the library
// only if they are extern "C"), and matches the contract's signatures.
#include "resilient_amqp.h"

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <type_traits>

static_assert(std::is_same<amqp_connection_handle, uint64_t>::value, "handle is uint64_t");
static_assert(std::is_same<amqp_queue_handle, uint64_t>::value, "handle is uint64_t");
static_assert(std::is_standard_layout<amqp_delivery>::value, "C layout");
static_assert(std::is_trivial<amqp_queue_stats>::value, "C layout");
static_assert(std::is_trivial<amqp_connection_stats>::value, "C layout");
static_assert(offsetof(amqp_delivery, body) == 0, "body first");
static_assert(std::is_same<decltype(amqp_delivery::body), const uint8_t *>::value, "body");
static_assert(std::is_same<decltype(amqp_delivery::body_len), size_t>::value, "body_len");
static_assert(std::is_same<decltype(amqp_delivery::redelivered), bool>::value, "redelivered");

static_assert(std::is_same<decltype(&amqp_connect),
                           amqp_result (*)(const char *, const char *, amqp_connection_handle *)>::value,
              "amqp_connect");
static_assert(std::is_same<decltype(&amqp_wait_connected),
                           amqp_result (*)(amqp_connection_handle, uint32_t)>::value,
              "amqp_wait_connected");
static_assert(std::is_same<decltype(&amqp_queue_open),
                           amqp_result (*)(amqp_connection_handle, const char *, const char *,
                                           const char *, const char *, amqp_queue_handle *)>::value,
              "amqp_queue_open");
static_assert(std::is_same<decltype(&amqp_publish),
                           amqp_result (*)(amqp_queue_handle, const void *, size_t)>::value,
              "amqp_publish");
static_assert(std::is_same<decltype(&amqp_consume),
                           amqp_result (*)(amqp_queue_handle, amqp_consume_fn, void *, uint32_t)>::value,
              "amqp_consume");
static_assert(std::is_same<amqp_consume_fn,
                           amqp_disposition (*)(const amqp_delivery *, void *)>::value,
              "amqp_consume_fn");
static_assert(std::is_same<decltype(&amqp_consume_stop), amqp_result (*)(amqp_queue_handle)>::value,
              "amqp_consume_stop");
static_assert(std::is_same<decltype(&amqp_consume_start), amqp_result (*)(amqp_queue_handle)>::value,
              "amqp_consume_start");
static_assert(std::is_same<decltype(&amqp_close_graceful),
                           amqp_result (*)(amqp_connection_handle, uint32_t, uint64_t *)>::value,
              "amqp_close_graceful");
static_assert(std::is_same<decltype(&amqp_result_str), const char *(*)(amqp_result)>::value,
              "amqp_result_str");
static_assert(std::is_same<decltype(&amqp_last_error), size_t (*)(char *, size_t)>::value,
              "amqp_last_error");
static_assert(std::is_same<decltype(&amqp_connection_get_stats),
                           amqp_result (*)(amqp_connection_handle, amqp_connection_stats *)>::value,
              "amqp_connection_get_stats");
static_assert(std::is_same<decltype(&amqp_queue_get_stats),
                           amqp_result (*)(amqp_queue_handle, amqp_queue_stats *)>::value,
              "amqp_queue_get_stats");
static_assert(std::is_same<decltype(&amqp_set_log_callback),
                           amqp_result (*)(amqp_log_fn, amqp_log_level, void *)>::value,
              "amqp_set_log_callback");
static_assert(std::is_same<amqp_log_fn, void (*)(amqp_log_level, const char *, void *)>::value,
              "amqp_log_fn");
static_assert(std::is_same<decltype(&amqp_connection_state_str),
                           const char *(*)(amqp_connection_state)>::value,
              "amqp_connection_state_str");

static_assert(AMQP_OK == 0 && AMQP_ERR_INTERNAL == 9 && AMQP_ERR_ALREADY_SETTLED == 11 &&
                  AMQP_REQUEUE == 0x5A03 && AMQP_DEFER == 0x5A04 && AMQP_STATE_CLOSED == 4 &&
                  AMQP_LOG_DEBUG == 4 && AMQP_ABI_VERSION == 6 && AMQP_VALUE_ARRAY == 8,
              "enum values");
static_assert(std::is_same<decltype(&amqp_publish_message),
                           amqp_result (*)(amqp_queue_handle, const void *, size_t,
                                           const amqp_message *)>::value,
              "amqp_publish_message");
static_assert(offsetof(amqp_queue_stats, size) == 0 && offsetof(amqp_connection_stats, size) == 0 &&
                  offsetof(amqp_message, size) == 0,
              "size first");

extern "C" amqp_disposition cpp_cb(const amqp_delivery *, void *) { return AMQP_ACK; }

int main() {
  // Calls through C linkage: this program links only if the names are unmangled.
  const char *s = amqp_result_str(AMQP_ERR_TIMEOUT);
  const char *st = amqp_connection_state_str(AMQP_STATE_CONNECTED);
  amqp_consume_fn fn = cpp_cb;
  char buf[8];
  size_t n = amqp_last_error(buf, sizeof buf);
  if (s == nullptr || s[0] == '\0' || st == nullptr || fn == nullptr || n != 0 ||
      amqp_publish(0, "x", 1) != AMQP_ERR_INVALID_HANDLE) {
    std::printf("FAIL header_cpp: unexpected results\n");
    return 1;
  }
  std::printf("PASS header_cpp_signatures_and_c_linkage\n");
  return 0;
}
