// resilient_amqp.hpp: a header-only C++17 RAII wrapper over the C ABI of
// resilient-amqp (include/resilient_amqp.h, libresilient_amqp.so).
//
//   resilient_amqp::Connection conn("amqp://guest:guest@127.0.0.1:5672/%2f");
//   resilient_amqp::Queue q = conn.open_queue("orders", "shop", "order.created");
//   q.publish(std::string_view("hello"));
//   q.consume([](const resilient_amqp::Delivery& d) {
//       handle(d.body());                      // a throw here requeues, never acks
//       return resilient_amqp::Disposition::Ack;
//   });
//   std::uint64_t unsent = conn.close(5000);   // or let the destructor close it
//
// Threads: consume handlers run on the library's "ramqp-consumer" threads, the
// log function on its "ramqp-log" thread; everything else on the caller's.
// No C++ exception ever crosses into the library: the C trampolines catch
// everything (a handler that throws requeues its delivery, is counted in
// Queue::handler_errors() and logged at WARN).
#ifndef RESILIENT_AMQP_HPP
#define RESILIENT_AMQP_HPP

#include <resilient_amqp.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <utility>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace resilient_amqp {

// ---- errors -----------------------------------------------------------------

// A failed library call: the library's result code and its message text.
class Error : public std::runtime_error {
 public:
  Error(amqp_result code, std::string message)
      : std::runtime_error(std::string(amqp_result_str(code)) + ": " + message),
        code_(code),
        message_(std::move(message)) {}
  amqp_result code() const noexcept { return code_; }
  // The library's text alone (what() is "AMQP_ERR_...: text").
  const std::string& message() const noexcept { return message_; }
  const char* code_name() const noexcept { return amqp_result_str(code_); }

 private:
  amqp_result code_;
  std::string message_;
};

namespace detail {
constexpr std::size_t kErrCap = 512;

// For calls that are not `_e` variants: the message of this thread's last
// failed call, read on the same thread right after it.
[[noreturn]] inline void throw_last(amqp_result rc, const char* what) {
  char buf[kErrCap];
  buf[0] = '\0';
  amqp_last_error(buf, sizeof buf);
  std::string msg = buf[0] ? std::string(buf) : std::string(what);
  throw Error(rc, std::move(msg));
}
inline void check(amqp_result rc, const char* what) {
  if (rc != AMQP_OK) throw_last(rc, what);
}
// For `_e` variants: the message the call itself wrote into `buf`.
inline void check_e(amqp_result rc, const char* buf, const char* what) {
  if (rc != AMQP_OK) throw Error(rc, buf[0] ? std::string(buf) : std::string(what));
}
}  // namespace detail

// ---- logging ----------------------------------------------------------------

enum class LogLevel : int {
  Off = AMQP_LOG_OFF,
  Error = AMQP_LOG_ERROR,
  Warn = AMQP_LOG_WARN,
  Info = AMQP_LOG_INFO,
  Debug = AMQP_LOG_DEBUG,
};

using LogFn = std::function<void(LogLevel, std::string_view)>;

namespace detail {
struct LogSink {
  LogFn fn;
  LogLevel level;
};
// The binding's own messages (a handler that threw) go to the same function
// as the library's, when one is set; else to stderr.
inline std::mutex& log_mutex() {
  static std::mutex m;
  return m;
}
inline std::shared_ptr<LogSink>& log_sink() {
  static std::shared_ptr<LogSink> s;
  return s;
}
inline std::shared_ptr<LogSink> current_sink() {
  std::lock_guard<std::mutex> g(log_mutex());
  return log_sink();
}
inline void binding_log(LogLevel level, const std::string& line) noexcept {
  try {
    std::shared_ptr<LogSink> s = current_sink();
    if (s) {
      if (static_cast<int>(level) <= static_cast<int>(s->level)) s->fn(level, line);
    } else {
      std::fprintf(stderr, "resilient_amqp: %s\n", line.c_str());
    }
  } catch (...) {
    // a log function that throws loses its line, nothing more
  }
}
extern "C" inline void ra_cpp_log_trampoline(amqp_log_level level, const char* message, void* ud) {
  try {
    auto* s = static_cast<std::shared_ptr<LogSink>*>(ud);
    (*s)->fn(static_cast<LogLevel>(level), message ? std::string_view(message) : std::string_view());
  } catch (...) {
    // never into the library
  }
}
extern "C" inline void ra_cpp_log_release(void* ud) { delete static_cast<std::shared_ptr<LogSink>*>(ud); }
}  // namespace detail

// Routes the library's log lines (and the binding's) at `level` and more
// severe to `fn`, called on the library's "ramqp-log" thread one line at a
// time (the binding's own lines on the thread they happen on). `fn` must be
// thread-safe; an exception from it is swallowed. Replaces any earlier one.
inline void set_log_callback(LogFn fn, LogLevel level = LogLevel::Info) {
  if (!fn) throw Error(AMQP_ERR_INVALID_ARGUMENT, "set_log_callback: empty function");
  auto sink = std::make_shared<detail::LogSink>(detail::LogSink{std::move(fn), level});
  auto* ud = new std::shared_ptr<detail::LogSink>(sink);
  amqp_result rc = amqp_set_log_callback_ex(detail::ra_cpp_log_trampoline, static_cast<amqp_log_level>(level),
                                            ud, detail::ra_cpp_log_release);
  if (rc != AMQP_OK) {
    delete ud;
    detail::throw_last(rc, "amqp_set_log_callback_ex");
  }
  std::lock_guard<std::mutex> g(detail::log_mutex());
  detail::log_sink() = std::move(sink);
}

// Turns the log function off (the library releases it after its last call).
inline void clear_log_callback() noexcept {
  amqp_set_log_callback(nullptr, AMQP_LOG_OFF, nullptr);
  std::lock_guard<std::mutex> g(detail::log_mutex());
  detail::log_sink().reset();
}

// ---- dispositions, deliveries -----------------------------------------------

enum class Disposition : int {
  Ack = AMQP_ACK,
  Reject = AMQP_REJECT,
  Requeue = AMQP_REQUEUE,
  Defer = AMQP_DEFER,  // settle later with Queue::settle(delivery_id, ...)
};

// A read-only view of one header value of a delivery.
class Value {
 public:
  explicit Value(const amqp_value* v) : v_(v) {}
  amqp_value_kind kind() const { return static_cast<amqp_value_kind>(v_->kind); }
  bool is_string() const { return v_->kind == AMQP_VALUE_STRING || v_->kind == AMQP_VALUE_BYTES; }
  bool is_integer() const {
    switch (v_->kind) {
      case AMQP_VALUE_INT: case AMQP_VALUE_INT8: case AMQP_VALUE_UINT8: case AMQP_VALUE_INT16:
      case AMQP_VALUE_UINT16: case AMQP_VALUE_INT32: case AMQP_VALUE_UINT32:
        return true;
      default:
        return false;
    }
  }
  std::string_view as_string() const {
    if (!is_string()) throw Error(AMQP_ERR_INVALID_ARGUMENT, "header value is not a string");
    return {static_cast<const char*>(v_->bytes), v_->len};
  }
  std::int64_t as_int() const {
    if (!is_integer()) throw Error(AMQP_ERR_INVALID_ARGUMENT, "header value is not an integer");
    return v_->integer;
  }
  bool as_bool() const {
    if (v_->kind != AMQP_VALUE_BOOL) throw Error(AMQP_ERR_INVALID_ARGUMENT, "header value is not a boolean");
    return v_->integer != 0;
  }
  double as_double() const {
    if (v_->kind != AMQP_VALUE_DOUBLE && v_->kind != AMQP_VALUE_FLOAT)
      throw Error(AMQP_ERR_INVALID_ARGUMENT, "header value is not a double");
    return v_->number;
  }
  std::uint64_t as_timestamp() const {
    if (v_->kind != AMQP_VALUE_TIMESTAMP) throw Error(AMQP_ERR_INVALID_ARGUMENT, "header value is not a timestamp");
    return static_cast<std::uint64_t>(v_->integer);
  }
  const amqp_value& raw() const { return *v_; }

 private:
  const amqp_value* v_;
};

// A view of one delivery, valid during the handler call (copy what you keep).
class Delivery {
 public:
  explicit Delivery(const amqp_delivery* d) : d_(d) {}
  std::string_view body() const {
    return d_->body_len ? std::string_view(reinterpret_cast<const char*>(d_->body), d_->body_len) : std::string_view();
  }
  const std::uint8_t* data() const { return d_->body; }
  std::size_t size() const { return d_->body_len; }
  std::string_view exchange() const { return {d_->exchange, d_->exchange_len}; }
  std::string_view routing_key() const { return {d_->routing_key, d_->routing_key_len}; }
  bool redelivered() const { return d_->redelivered; }
  std::uint64_t delivery_id() const { return d_->delivery_id; }
  std::uint64_t delivery_tag() const { return d_->delivery_tag; }

  // Properties: std::nullopt when the message did not carry them.
  std::optional<std::string_view> content_type() const { return str(AMQP_PROP_CONTENT_TYPE, m().content_type); }
  std::optional<std::string_view> content_encoding() const {
    return str(AMQP_PROP_CONTENT_ENCODING, m().content_encoding);
  }
  std::optional<std::string_view> correlation_id() const { return str(AMQP_PROP_CORRELATION_ID, m().correlation_id); }
  std::optional<std::string_view> reply_to() const { return str(AMQP_PROP_REPLY_TO, m().reply_to); }
  std::optional<std::string_view> expiration() const { return str(AMQP_PROP_EXPIRATION, m().expiration); }
  std::optional<std::string_view> message_id() const { return str(AMQP_PROP_MESSAGE_ID, m().message_id); }
  std::optional<std::string_view> message_type() const { return str(AMQP_PROP_TYPE, m().message_type); }
  std::optional<std::string_view> user_id() const { return str(AMQP_PROP_USER_ID, m().user_id); }
  std::optional<std::string_view> app_id() const { return str(AMQP_PROP_APP_ID, m().app_id); }
  std::optional<std::uint64_t> timestamp() const {
    if (!(m().present & AMQP_PROP_TIMESTAMP)) return std::nullopt;
    return m().timestamp;
  }
  std::optional<std::uint8_t> priority() const {
    if (!(m().present & AMQP_PROP_PRIORITY)) return std::nullopt;
    return m().priority;
  }
  std::optional<std::uint8_t> delivery_mode() const {
    if (!(m().present & AMQP_PROP_DELIVERY_MODE)) return std::nullopt;
    return m().delivery_mode;
  }
  std::size_t header_count() const { return m().headers ? m().header_count : 0; }
  std::string_view header_key(std::size_t i) const { return m().headers[i].key; }
  Value header_value(std::size_t i) const { return Value(&m().headers[i].value); }
  // The first header named `key`, if any.
  std::optional<Value> header(std::string_view key) const {
    for (std::size_t i = 0; i < header_count(); i++)
      if (key == m().headers[i].key) return Value(&m().headers[i].value);
    return std::nullopt;
  }
  const amqp_delivery& raw() const { return *d_; }

 private:
  const amqp_message& m() const { return *d_->message; }
  std::optional<std::string_view> str(std::uint16_t flag, const char* s) const {
    if (!(m().present & flag) || s == nullptr) return std::nullopt;
    return std::string_view(s);
  }
  const amqp_delivery* d_;
};

// A delivery taken with Queue::poll (pull mode): owned, valid until this
// object is destroyed (it then frees it), whatever settle, stop, reconnect
// or close do. Settle it by id with Queue::settle (before or after it is
// destroyed); every polled delivery must be settled. Move-only.
class PolledDelivery {
 public:
  explicit PolledDelivery(const amqp_delivery* d) noexcept : d_(d) {}
  PolledDelivery(const PolledDelivery&) = delete;
  PolledDelivery& operator=(const PolledDelivery&) = delete;
  PolledDelivery(PolledDelivery&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  PolledDelivery& operator=(PolledDelivery&& o) noexcept {
    if (this != &o) {
      if (d_ != nullptr) amqp_delivery_free(d_);
      d_ = std::exchange(o.d_, nullptr);
    }
    return *this;
  }
  ~PolledDelivery() {
    if (d_ != nullptr) amqp_delivery_free(d_);
  }
  // Everything Delivery reads (body, properties, headers, delivery_id...).
  Delivery view() const { return Delivery(d_); }
  std::string_view body() const { return view().body(); }
  std::uint64_t delivery_id() const { return d_->delivery_id; }
  bool redelivered() const { return d_->redelivered; }

 private:
  const amqp_delivery* d_;
};

// ---- messages (publish with properties) ----------------------------------------

// A builder over amqp_message: properties, typed headers, a routing key of
// its own, a report tag. Owns its strings; reusable for many publishes.
class Message {
 public:
  Message& content_type(std::string v) { return set(content_type_, std::move(v)); }
  Message& content_encoding(std::string v) { return set(content_encoding_, std::move(v)); }
  Message& correlation_id(std::string v) { return set(correlation_id_, std::move(v)); }
  Message& reply_to(std::string v) { return set(reply_to_, std::move(v)); }
  Message& expiration(std::string v) { return set(expiration_, std::move(v)); }
  Message& message_id(std::string v) { return set(message_id_, std::move(v)); }
  Message& message_type(std::string v) { return set(message_type_, std::move(v)); }
  Message& user_id(std::string v) { return set(user_id_, std::move(v)); }
  Message& app_id(std::string v) { return set(app_id_, std::move(v)); }
  Message& routing_key(std::string v) { return set(routing_key_, std::move(v)); }
  Message& timestamp(std::uint64_t seconds) {
    timestamp_ = seconds;
    present_ |= AMQP_PROP_TIMESTAMP;
    return *this;
  }
  Message& priority(std::uint8_t p) {
    priority_ = p;
    present_ |= AMQP_PROP_PRIORITY;
    return *this;
  }
  // 1 transient, 2 persistent.
  Message& delivery_mode(std::uint8_t mode) {
    delivery_mode_ = mode;
    return *this;
  }
  Message& persistent(bool yes = true) { return delivery_mode(yes ? 2 : 1); }
  Message& tag(std::uint64_t t) {
    tag_ = t;
    return *this;
  }

  // Typed headers. A string literal is a string, never a bool.
  Message& header(std::string key, std::string_view v) { return add(std::move(key), AMQP_VALUE_STRING, 0, 0, v); }
  Message& header(std::string key, const char* v) { return header(std::move(key), std::string_view(v)); }
  Message& header(std::string key, const std::string& v) { return header(std::move(key), std::string_view(v)); }
  Message& header(std::string key, bool v) { return add(std::move(key), AMQP_VALUE_BOOL, v ? 1 : 0, 0, {}); }
  Message& header(std::string key, double v) { return add(std::move(key), AMQP_VALUE_DOUBLE, 0, v, {}); }
  template <typename I, typename = std::enable_if_t<std::is_integral<I>::value && !std::is_same<I, bool>::value>>
  Message& header(std::string key, I v) {
    return add(std::move(key), AMQP_VALUE_INT, static_cast<std::int64_t>(v), 0, {});
  }
  Message& header_bytes(std::string key, const void* data, std::size_t len) {
    return add(std::move(key), AMQP_VALUE_BYTES, 0, 0, std::string_view(static_cast<const char*>(data), len));
  }
  Message& header_timestamp(std::string key, std::uint64_t seconds) {
    return add(std::move(key), AMQP_VALUE_TIMESTAMP, static_cast<std::int64_t>(seconds), 0, {});
  }
  Message& header_void(std::string key) { return add(std::move(key), AMQP_VALUE_VOID, 0, 0, {}); }

  // The C description, pointing into this object (valid while it lives
  // unchanged); `fields` receives the header array it points to.
  amqp_message to_c(std::vector<amqp_field>& fields) const {
    amqp_message m;
    std::memset(&m, 0, sizeof m);
    m.size = sizeof m;
    m.routing_key = c(routing_key_);
    m.content_type = c(content_type_);
    m.content_encoding = c(content_encoding_);
    m.correlation_id = c(correlation_id_);
    m.reply_to = c(reply_to_);
    m.expiration = c(expiration_);
    m.message_id = c(message_id_);
    m.message_type = c(message_type_);
    m.user_id = c(user_id_);
    m.app_id = c(app_id_);
    m.timestamp = timestamp_;
    m.priority = priority_;
    m.delivery_mode = delivery_mode_;
    m.present = present_;
    m.tag = tag_;
    fields.clear();
    fields.reserve(headers_.size());
    for (const Header& h : headers_) {
      amqp_field f;
      std::memset(&f, 0, sizeof f);
      f.key = h.key.c_str();
      f.value.kind = h.kind;
      f.value.integer = h.integer;
      f.value.number = h.number;
      f.value.bytes = h.bytes.data();
      f.value.len = h.bytes.size();
      fields.push_back(f);
    }
    if (!headers_.empty()) {
      m.headers = fields.data();
      m.header_count = fields.size();
    }
    return m;
  }

 private:
  struct Header {
    std::string key;
    std::uint32_t kind;
    std::int64_t integer;
    double number;
    std::string bytes;
  };
  Message& set(std::optional<std::string>& field, std::string v) {
    field = std::move(v);
    return *this;
  }
  Message& add(std::string key, std::uint32_t kind, std::int64_t i, double d, std::string_view b) {
    headers_.push_back(Header{std::move(key), kind, i, d, std::string(b)});
    return *this;
  }
  static const char* c(const std::optional<std::string>& s) { return s ? s->c_str() : nullptr; }

  std::optional<std::string> routing_key_, content_type_, content_encoding_, correlation_id_, reply_to_,
      expiration_, message_id_, message_type_, user_id_, app_id_;
  std::uint64_t timestamp_ = 0;
  std::uint8_t priority_ = 0;
  std::uint8_t delivery_mode_ = 0;
  std::uint16_t present_ = 0;
  std::uint64_t tag_ = 0;
  std::vector<Header> headers_;
};

// ---- stats --------------------------------------------------------------------

// The library's queue counters plus the binding's own.
struct QueueStats : amqp_queue_stats {
  // Handler calls that threw (each delivery requeued, or as the consume's
  // on_error says; never acked).
  std::uint64_t handler_errors = 0;
};

// ---- consuming ----------------------------------------------------------------

using Handler = std::function<Disposition(const Delivery&)>;

namespace detail {
struct ConsumeState {
  Handler handler;
  Disposition on_error;
  std::shared_ptr<std::atomic<std::uint64_t>> errors;
};

extern "C" inline amqp_disposition ra_cpp_consume_trampoline(const amqp_delivery* d, void* ud) {
  auto* st = static_cast<ConsumeState*>(ud);
  const char* what = nullptr;
  std::string text;
  try {
    return static_cast<amqp_disposition>(st->handler(Delivery(d)));
  } catch (const std::exception& e) {
    try {
      text = e.what();
    } catch (...) {
    }
    what = "exception";
  } catch (...) {
    what = "non-std exception";
  }
  // Only reached after a throw: never ack.
  st->errors->fetch_add(1, std::memory_order_relaxed);
  try {
    std::string line = std::string("consume handler threw (") + what + ")" + (text.empty() ? "" : ": " + text) +
                       "; delivery " + std::to_string(d->delivery_id) +
                       (st->on_error == Disposition::Reject ? " rejected" : " requeued");
    binding_log(LogLevel::Warn, line);
  } catch (...) {
  }
  return static_cast<amqp_disposition>(st->on_error);
}
extern "C" inline void ra_cpp_consume_release(void* ud) { delete static_cast<ConsumeState*>(ud); }

// Lets handlers return void (ack) or a Disposition.
template <typename F>
Handler wrap_handler(F&& f) {
  using R = std::invoke_result_t<F&, const Delivery&>;
  if constexpr (std::is_void<R>::value) {
    return [g = std::forward<F>(f)](const Delivery& d) mutable {
      g(d);
      return Disposition::Ack;
    };
  } else {
    static_assert(std::is_same<R, Disposition>::value, "a consume handler returns void or Disposition");
    return Handler(std::forward<F>(f));
  }
}
}  // namespace detail

// ---- delivery reports (publish_confirmed) ------------------------------------------

// How a message published with Queue::publish_confirmed ended.
struct Report {
  amqp_report_status status = AMQP_REPORT_UNSENT;
  std::uint32_t attempts = 0;
  std::uint32_t reply_code = 0;  // the broker's, for REFUSED / TOO_LARGE / UNROUTABLE
  std::string reason;            // empty when confirmed
  bool confirmed() const noexcept { return status == AMQP_REPORT_CONFIRMED; }
};

namespace detail {
// The pending confirmations of one queue: the library's report function
// (on its report thread) fulfils them. Owned by the Connection's list, so
// it outlives every report call (close waits for the report thread).
struct ReportState {
  std::mutex m;
  std::map<std::uint64_t, std::promise<Report>> pending;
  std::uint64_t next_tag = 1;
  bool installed = false;

  // Every promise left (the connection closed before their report).
  void settle_remaining(const std::string& why) {
    std::map<std::uint64_t, std::promise<Report>> left;
    {
      std::lock_guard<std::mutex> g(m);
      left.swap(pending);
    }
    for (auto& kv : left) {
      Report r;
      r.reason = why;
      kv.second.set_value(std::move(r));
    }
  }
};

struct ReportStates {
  std::mutex m;
  std::vector<std::unique_ptr<ReportState>> all;
  ReportState* add() {
    std::lock_guard<std::mutex> g(m);
    all.push_back(std::make_unique<ReportState>());
    return all.back().get();
  }
};

extern "C" inline void ra_cpp_report_trampoline(const amqp_delivery_report* r, void* ud) noexcept {
  auto* st = static_cast<ReportState*>(ud);
  std::promise<Report> p;
  {
    std::lock_guard<std::mutex> g(st->m);
    auto it = st->pending.find(r->tag);
    if (it == st->pending.end()) return;  // a plain publish (tag 0) on this queue
    p = std::move(it->second);
    st->pending.erase(it);
  }
  try {
    Report rep;
    rep.status = r->status;
    rep.attempts = r->attempts;
    rep.reply_code = r->reply_code;
    if (r->reason != nullptr) rep.reason = r->reason;
    p.set_value(std::move(rep));
  } catch (...) {
    // nothing may cross into the library (bad_alloc): the future gets it
    try {
      p.set_exception(std::current_exception());
    } catch (...) {
    }
  }
}
}  // namespace detail

// ---- queue ----------------------------------------------------------------------

// A queue of a Connection (one channel). Move-only. Its consumer sets end
// when the Queue is destroyed (their running handlers awaited, up to
// `cancel_timeout_ms`); the channel itself lives until the Connection closes.
// The handle is invalid once its Connection closed.
class Queue {
 public:
  Queue() = default;
  explicit Queue(amqp_queue_handle h, std::shared_ptr<detail::ReportStates> reports = nullptr)
      : h_(h), errors_(std::make_shared<std::atomic<std::uint64_t>>(0)), reports_(std::move(reports)) {}
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;
  Queue(Queue&& o) noexcept
      : cancel_timeout_ms(o.cancel_timeout_ms),
        h_(std::exchange(o.h_, 0)),
        consumers_(std::move(o.consumers_)),
        errors_(std::move(o.errors_)),
        reports_(std::move(o.reports_)),
        report_(std::exchange(o.report_, nullptr)) {}
  Queue& operator=(Queue&& o) noexcept {
    if (this != &o) {
      cancel_consumers();
      h_ = std::exchange(o.h_, 0);
      consumers_ = std::move(o.consumers_);
      errors_ = std::move(o.errors_);
      reports_ = std::move(o.reports_);
      report_ = std::exchange(o.report_, nullptr);
      cancel_timeout_ms = o.cancel_timeout_ms;
    }
    return *this;
  }
  ~Queue() { cancel_consumers(); }

  amqp_queue_handle handle() const noexcept { return h_; }
  explicit operator bool() const noexcept { return h_ != 0; }

  // Copies the body into the queue's buffer; never blocks. Throws Error
  // (AMQP_ERR_BUFFER_FULL: nothing stored; try_publish to avoid exceptions).
  void publish(const void* body, std::size_t len) { detail::check(amqp_publish(h_, body, len), "amqp_publish"); }
  void publish(std::string_view body) { publish(body.data(), body.size()); }
  void publish(const std::vector<std::uint8_t>& body) { publish(body.data(), body.size()); }
  void publish(std::string_view body, const Message& m) { publish(body.data(), body.size(), m); }
  void publish(const void* body, std::size_t len, const Message& m) {
    std::vector<amqp_field> fields;
    amqp_message cm = m.to_c(fields);
    detail::check(amqp_publish_message(h_, body, len, &cm), "amqp_publish_message");
  }
  void publish_tagged(std::string_view body, std::uint64_t tag) {
    detail::check(amqp_publish_tagged(h_, body.data(), body.size(), tag), "amqp_publish_tagged");
  }
  // No exception: the library's code (AMQP_OK, AMQP_ERR_BUFFER_FULL, ...).
  amqp_result try_publish(const void* body, std::size_t len) noexcept { return amqp_publish(h_, body, len); }
  amqp_result try_publish(std::string_view body) noexcept { return amqp_publish(h_, body.data(), body.size()); }
  // Publishes and returns a future that becomes ready when the broker
  // confirmed the message (Report::confirmed()) or it failed for good
  // (NACKED, REFUSED, TOO_LARGE, EXPIRED, UNROUTABLE; UNSENT when the
  // connection closed first). Throws Error as publish does (nothing stored,
  // no future). The first call sets the queue's report function (its plain
  // publishes are then reported too, and ignored).
  std::future<Report> publish_confirmed(std::string_view body) { return publish_confirmed(body, nullptr); }
  std::future<Report> publish_confirmed(std::string_view body, const Message& m) {
    return publish_confirmed(body, &m);
  }
  // Waits up to timeout_ms while the buffer is full (confirms make room).
  void publish_wait(const void* body, std::size_t len, std::uint32_t timeout_ms) {
    char buf[detail::kErrCap] = "";
    detail::check_e(amqp_publish_wait_e(h_, body, len, timeout_ms, buf, sizeof buf), buf, "amqp_publish_wait");
  }
  void publish_wait(std::string_view body, std::uint32_t timeout_ms) {
    publish_wait(body.data(), body.size(), timeout_ms);
  }

  // Starts `repeat` consumers calling `handler` (returning Disposition, or
  // void = Ack) on library threads, up to `repeat` at once. A handler that
  // throws never acks: its delivery is requeued (or rejected, on_error =
  // Reject), the throw counted (handler_errors) and logged at WARN.
  // Returns the consumer set's id (cancel_consumer). Blocks while connected
  // until the broker's consume-ok (up to 30 s).
  template <typename F>
  std::uint64_t consume(F&& handler, std::uint32_t repeat = 1, Disposition on_error = Disposition::Requeue) {
    if (on_error != Disposition::Requeue && on_error != Disposition::Reject)
      throw Error(AMQP_ERR_INVALID_ARGUMENT, "consume: on_error must be Requeue or Reject");
    auto* st = new detail::ConsumeState{detail::wrap_handler(std::forward<F>(handler)), on_error, errors_};
    std::uint64_t id = 0;
    amqp_result rc = amqp_consume_ex(h_, detail::ra_cpp_consume_trampoline, st, detail::ra_cpp_consume_release, repeat, &id);
    if (rc != AMQP_OK) {
      delete st;  // never released on failure
      detail::throw_last(rc, "amqp_consume_ex");
    }
    consumers_.push_back(id);
    return id;
  }
  // Ends one consumer set; waits up to timeout_ms for its running handlers.
  void cancel_consumer(std::uint64_t id, std::uint32_t timeout_ms = 30000) {
    char buf[detail::kErrCap] = "";
    amqp_result rc = amqp_consume_cancel_e(h_, id, timeout_ms, buf, sizeof buf);
    for (auto it = consumers_.begin(); it != consumers_.end(); ++it)
      if (*it == id) {
        consumers_.erase(it);
        break;
      }
    detail::check_e(rc, buf, "amqp_consume_cancel");
  }
  // Pauses every consumer of the queue; after it returns no handler runs.
  void stop(std::uint32_t timeout_ms = 30000) {
    char buf[detail::kErrCap] = "";
    detail::check_e(amqp_consume_stop_timeout_e(h_, timeout_ms, buf, sizeof buf), buf, "amqp_consume_stop");
  }
  void start() { detail::check(amqp_consume_start(h_), "amqp_consume_start"); }
  // Settles a delivery whose handler returned Disposition::Defer.
  void settle(std::uint64_t delivery_id, Disposition d) {
    detail::check(amqp_settle(h_, delivery_id, static_cast<amqp_disposition>(d)), "amqp_settle");
  }

  // Pull mode (no library thread runs your code): starts the queue's pull
  // consumer (once; later calls keep it) and returns a NEW file descriptor
  // that you own and close: readable while deliveries wait (level-
  // triggered; readiness can be spurious), for an event loop (epoll,
  // boost::asio's posix::stream_descriptor, ...). Blocks while connected
  // until the broker's consume-ok (up to 30 s). Throws Error
  // (AMQP_ERR_BROKER: the broker refused the consumer).
  int consume_pull() {
    char buf[detail::kErrCap] = "";
    int fd = -1;
    detail::check_e(amqp_consume_pull_e(h_, &fd, buf, sizeof buf), buf, "amqp_consume_pull");
    return fd;
  }
  // Takes up to `max` waiting deliveries, waiting up to timeout_ms for the
  // first (0: never waits). Empty on timeout or after poll_wake. Throws
  // Error: AMQP_ERR_CLOSED once the connection is closed or failed,
  // AMQP_ERR_INVALID_ARGUMENT without consume_pull. Blocks up to timeout_ms.
  std::vector<PolledDelivery> poll(std::size_t max = 64, std::uint32_t timeout_ms = 0) {
    if (max == 0) throw Error(AMQP_ERR_INVALID_ARGUMENT, "poll: max is 0");
    std::vector<const amqp_delivery*> raw(max, nullptr);
    std::size_t n = 0;
    char buf[detail::kErrCap] = "";
    amqp_result rc = amqp_poll_e(h_, raw.data(), max, timeout_ms, &n, buf, sizeof buf);
    std::vector<PolledDelivery> out;
    if (rc == AMQP_ERR_TIMEOUT) return out;
    detail::check_e(rc, buf, "amqp_poll");
    out.reserve(n);
    for (std::size_t i = 0; i < n; i++) out.emplace_back(raw[i]);
    return out;
  }
  // Makes a poll blocked in another thread return (empty) at once.
  void poll_wake() { detail::check(amqp_poll_wake(h_), "amqp_poll_wake"); }
  // Ends the pull consumer alone (ABI 6): deliveries waiting to be polled go
  // back to the broker; polled ones stay settleable; callback consumers go
  // on; a later consume_pull starts a new one. Waits up to timeout_ms for the
  // broker's cancel-ok (0: does not wait). Throws Error (AMQP_ERR_TIMEOUT,
  // AMQP_ERR_INVALID_ARGUMENT without a pull consumer).
  void consume_pull_cancel(std::uint32_t timeout_ms = 5000) {
    detail::check(amqp_consume_pull_cancel(h_, timeout_ms), "amqp_consume_pull_cancel");
  }

  QueueStats stats() const {
    QueueStats s;
    std::memset(static_cast<amqp_queue_stats*>(&s), 0, sizeof(amqp_queue_stats));
    s.size = sizeof(amqp_queue_stats);
    detail::check(amqp_queue_get_stats(h_, &s), "amqp_queue_get_stats");
    s.handler_errors = handler_errors();
    return s;
  }
  std::uint64_t handler_errors() const noexcept { return errors_ ? errors_->load() : 0; }
  // The queue's name at the broker (for a server-named queue, the current one).
  std::string name() const {
    std::size_t len = 0;
    detail::check(amqp_queue_name(h_, nullptr, 0, &len), "amqp_queue_name");
    std::string s(len + 1, '\0');
    detail::check(amqp_queue_name(h_, &s[0], s.size(), &len), "amqp_queue_name");
    s.resize(len);
    return s;
  }

  // How long the destructor waits for running handlers of its sets.
  std::uint32_t cancel_timeout_ms = 30000;

 private:
  std::future<Report> publish_confirmed(std::string_view body, const Message* m) {
    if (!reports_) throw Error(AMQP_ERR_INVALID_HANDLE, "publish_confirmed: a queue not opened by a Connection");
    if (report_ == nullptr) {
      detail::ReportState* st = reports_->add();
      detail::check(amqp_set_report_callback(h_, detail::ra_cpp_report_trampoline, st), "amqp_set_report_callback");
      report_ = st;
    }
    std::future<Report> f;
    std::uint64_t tag;
    {
      std::lock_guard<std::mutex> g(report_->m);
      tag = report_->next_tag++;
      f = report_->pending[tag].get_future();
    }
    amqp_result rc;
    if (m != nullptr) {
      std::vector<amqp_field> fields;
      amqp_message cm = m->to_c(fields);
      cm.tag = tag;
      rc = amqp_publish_message(h_, body.data(), body.size(), &cm);
    } else {
      rc = amqp_publish_tagged(h_, body.data(), body.size(), tag);
    }
    if (rc != AMQP_OK) {
      {
        std::lock_guard<std::mutex> g(report_->m);
        report_->pending.erase(tag);
      }
      detail::throw_last(rc, m != nullptr ? "amqp_publish_message" : "amqp_publish_tagged");
    }
    return f;
  }
  void cancel_consumers() noexcept {
    for (std::uint64_t id : consumers_) amqp_consume_cancel(h_, id, cancel_timeout_ms);  // closed conn: ignored
    consumers_.clear();
  }
  amqp_queue_handle h_ = 0;
  std::vector<std::uint64_t> consumers_;
  std::shared_ptr<std::atomic<std::uint64_t>> errors_;
  std::shared_ptr<detail::ReportStates> reports_;
  detail::ReportState* report_ = nullptr;  // owned by reports_
};

// ---- connection -----------------------------------------------------------------

struct CloseReport {
  amqp_result result;  // AMQP_OK or AMQP_ERR_TIMEOUT
  std::uint64_t unsent;
  std::uint64_t unsettled;
  std::uint64_t callbacks_running;
};

// A connection (connects and reconnects in the background). Move-only; the
// destructor closes it gracefully (waiting up to close_timeout_ms).
class Connection {
 public:
  Connection() = default;
  // Returns at once; a broker that is down is not an error.
  explicit Connection(const std::string& uri, const std::string& options = "") {
    detail::check(amqp_connect(uri.c_str(), options.c_str(), &h_), "amqp_connect");
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  Connection(Connection&& o) noexcept
      : close_timeout_ms(o.close_timeout_ms), h_(std::exchange(o.h_, 0)), reports_(std::move(o.reports_)) {}
  Connection& operator=(Connection&& o) noexcept {
    if (this != &o) {
      close_noexcept();
      h_ = std::exchange(o.h_, 0);
      reports_ = std::move(o.reports_);
      close_timeout_ms = o.close_timeout_ms;
    }
    return *this;
  }
  ~Connection() { close_noexcept(); }

  amqp_connection_handle handle() const noexcept { return h_; }
  explicit operator bool() const noexcept { return h_ != 0; }

  // true once connected, false after timeout_ms; Error once it gave up.
  bool wait_connected(std::uint32_t timeout_ms) {
    char buf[detail::kErrCap] = "";
    amqp_result rc = amqp_wait_connected_e(h_, timeout_ms, buf, sizeof buf);
    if (rc == AMQP_ERR_TIMEOUT) return false;
    detail::check_e(rc, buf, "amqp_wait_connected");
    return true;
  }

  // Opens a queue on its own channel (declares now while connected).
  Queue open_queue(const std::string& queue, const std::string& exchange = "", const std::string& routing_key = "",
                   const std::string& options = "") {
    char buf[detail::kErrCap] = "";
    amqp_queue_handle q = 0;
    amqp_result rc = amqp_queue_open_e(h_, queue.c_str(), exchange.c_str(), routing_key.c_str(), options.c_str(), &q,
                                       buf, sizeof buf);
    detail::check_e(rc, buf, "amqp_queue_open");
    return Queue(q, reports_);
  }

  // Graceful close: waits up to timeout_ms for confirms and running
  // handlers, then frees the connection and its queues. Returns the number
  // of messages not confirmed (0: all sent). close_ex tells more.
  std::uint64_t close(std::uint32_t timeout_ms = 10000) { return close_ex(timeout_ms).unsent; }
  CloseReport close_ex(std::uint32_t timeout_ms = 10000) {
    if (h_ == 0) throw Error(AMQP_ERR_INVALID_HANDLE, "connection already closed");
    amqp_close_report r;
    std::memset(&r, 0, sizeof r);
    r.size = sizeof r;
    char buf[detail::kErrCap] = "";
    amqp_result rc = amqp_close_ex_e(h_, timeout_ms, &r, buf, sizeof buf);
    h_ = 0;  // freed in every case
    settle_reports();
    if (rc != AMQP_OK && rc != AMQP_ERR_TIMEOUT) detail::check_e(rc, buf, "amqp_close_ex");
    return CloseReport{rc, r.unsent, r.unsettled, r.callbacks_running};
  }

  amqp_connection_stats stats() const {
    amqp_connection_stats s;
    std::memset(&s, 0, sizeof s);
    s.size = sizeof s;
    detail::check(amqp_connection_get_stats(h_, &s), "amqp_connection_get_stats");
    return s;
  }
  amqp_connection_state state() const { return stats().state; }

  // How long the destructor's close waits.
  std::uint32_t close_timeout_ms = 10000;

 private:
  void close_noexcept() noexcept {
    if (h_ != 0) {
      amqp_close_graceful(std::exchange(h_, 0), close_timeout_ms, nullptr);
      try {
        settle_reports();
      } catch (...) {
      }
    }
  }
  // After close (the report thread has ended): confirmations still pending
  // were not sent.
  void settle_reports() {
    if (!reports_) return;
    std::lock_guard<std::mutex> g(reports_->m);
    for (auto& st : reports_->all) st->settle_remaining("not confirmed when the connection closed");
  }
  amqp_connection_handle h_ = 0;
  std::shared_ptr<detail::ReportStates> reports_ = std::make_shared<detail::ReportStates>();
};

}  // namespace resilient_amqp

#endif  // RESILIENT_AMQP_HPP
