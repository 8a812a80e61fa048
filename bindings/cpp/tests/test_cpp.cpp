// Tests of resilient_amqp.hpp against the real broker given by
// RESILIENT_AMQP_TEST_URI (and RESILIENT_AMQP_TEST_CTL for the fault test).
//   test_cpp            every test
//   test_cpp NAME...    only those
#include <resilient_amqp.hpp>

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace ra = resilient_amqp;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::string g_uri;
std::string g_ctl;

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::ostringstream os_;                                                          \
      os_ << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #cond;                  \
      throw Failure(os_.str());                                                        \
    }                                                                                  \
  } while (0)
#define CHECK_EQ(a, b)                                                                 \
  do {                                                                                 \
    auto a_ = (a);                                                                     \
    auto b_ = (b);                                                                     \
    if (!(a_ == b_)) {                                                                 \
      std::ostringstream os_;                                                          \
      os_ << __FILE__ << ":" << __LINE__ << ": CHECK_EQ failed: " #a " == " #b " (" << a_ \
          << " vs " << b_ << ")";                                                      \
      throw Failure(os_.str());                                                        \
    }                                                                                  \
  } while (0)

std::string qname(const std::string& what) { return "cpp-test-" + what + "-" + std::to_string(getpid()); }
// Test queues: transient, deleted by the broker a minute after their last use.
const char* kQueueOpts = "durable=false&expires_ms=60000&prefetch=50";

// Waits until pred() or the deadline; returns pred().
bool wait_for(std::function<bool()> pred, std::chrono::milliseconds limit) {
  auto end = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() > end) return pred();
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

bool wait_confirmed(ra::Queue& q, std::uint64_t n, std::chrono::milliseconds limit) {
  return wait_for([&] { return q.stats().confirmed >= n; }, limit);
}

// Captures log lines (the library's and the binding's).
struct LogCapture {
  std::mutex m;
  std::vector<std::string> lines;
  void install(ra::LogLevel level = ra::LogLevel::Warn) {
    ra::set_log_callback(
        [this](ra::LogLevel, std::string_view line) {
          std::lock_guard<std::mutex> g(m);
          lines.emplace_back(line);
        },
        level);
  }
  bool contains(const std::string& s) {
    std::lock_guard<std::mutex> g(m);
    for (auto& l : lines)
      if (l.find(s) != std::string::npos) return true;
    return false;
  }
};

// ---- 1. round trip: bytes, std::string, string_view, properties and headers ------

void test_roundtrip() {
  ra::Connection conn(g_uri);
  CHECK(conn.wait_connected(10000));
  ra::Queue q = conn.open_queue(qname("roundtrip"), "", "", kQueueOpts);

  const std::vector<std::uint8_t> bytes = {0, 1, 2, 0xff, 0};
  const std::string str = "a std::string";
  q.publish(bytes);
  q.publish(str);
  q.publish(std::string_view("a string_view"));
  q.publish("", 0);
  ra::Message m;
  m.content_type("application/json")
      .correlation_id("corr-42")
      .reply_to("replies")
      .message_id("id-7")
      .message_type("order.created")
      .app_id("cpp-test")
      .expiration("60000")
      .timestamp(1700000000)
      .priority(3)
      .persistent(false)
      .header("tenant", "acme")
      .header("attempt", 3)
      .header("big", std::int64_t(1) << 40)
      .header("ok", true)
      .header("ratio", 0.5)
      .header_bytes("blob", "\x00\x01", 2)
      .header_timestamp("at", 1600000000);
  q.publish(std::string_view("{\"n\":1}"), m);
  CHECK(wait_confirmed(q, 5, 10s));

  struct Got {
    std::string body;
    std::map<std::string, std::string> props;
    bool redelivered;
  };
  std::mutex mu;
  std::vector<Got> got;
  q.consume([&](const ra::Delivery& d) {
    Got g{std::string(d.body()), {}, d.redelivered()};
    auto put = [&](const char* k, std::optional<std::string_view> v) {
      if (v) g.props[k] = std::string(*v);
    };
    put("content_type", d.content_type());
    put("correlation_id", d.correlation_id());
    put("reply_to", d.reply_to());
    put("message_id", d.message_id());
    put("type", d.message_type());
    put("app_id", d.app_id());
    put("expiration", d.expiration());
    if (d.timestamp()) g.props["timestamp"] = std::to_string(*d.timestamp());
    if (d.priority()) g.props["priority"] = std::to_string(*d.priority());
    if (d.delivery_mode()) g.props["delivery_mode"] = std::to_string(*d.delivery_mode());
    if (auto h = d.header("tenant")) g.props["h.tenant"] = std::string(h->as_string());
    if (auto h = d.header("attempt")) g.props["h.attempt"] = std::to_string(h->as_int());
    if (auto h = d.header("big")) g.props["h.big"] = std::to_string(h->as_int());
    if (auto h = d.header("ok")) g.props["h.ok"] = h->as_bool() ? "true" : "false";
    if (auto h = d.header("ratio")) g.props["h.ratio"] = std::to_string(h->as_double());
    if (auto h = d.header("blob")) g.props["h.blob"] = std::to_string(h->as_string().size());
    if (auto h = d.header("at")) g.props["h.at"] = std::to_string(h->as_timestamp());
    g.props["headers"] = std::to_string(d.header_count());
    std::lock_guard<std::mutex> lk(mu);
    got.push_back(std::move(g));
    return ra::Disposition::Ack;
  });
  CHECK(wait_for([&] { std::lock_guard<std::mutex> lk(mu); return got.size() >= 5; }, 10s));
  std::this_thread::sleep_for(100ms);
  std::lock_guard<std::mutex> lk(mu);
  CHECK_EQ(got.size(), std::size_t(5));
  CHECK(got[0].body == std::string("\0\1\2\xff\0", 5));
  CHECK_EQ(got[1].body, str);
  CHECK_EQ(got[2].body, std::string("a string_view"));
  CHECK_EQ(got[3].body, std::string());
  CHECK(got[0].props.count("content_type") == 0);
  const Got& p = got[4];
  CHECK_EQ(p.body, std::string("{\"n\":1}"));
  auto prop = [&](const char* k) { auto it = p.props.find(k); return it == p.props.end() ? std::string("<none>") : it->second; };
  CHECK_EQ(prop("content_type"), std::string("application/json"));
  CHECK_EQ(prop("correlation_id"), std::string("corr-42"));
  CHECK_EQ(prop("reply_to"), std::string("replies"));
  CHECK_EQ(prop("message_id"), std::string("id-7"));
  CHECK_EQ(prop("type"), std::string("order.created"));
  CHECK_EQ(prop("app_id"), std::string("cpp-test"));
  CHECK_EQ(prop("expiration"), std::string("60000"));
  CHECK_EQ(prop("timestamp"), std::string("1700000000"));
  CHECK_EQ(prop("priority"), std::string("3"));
  CHECK_EQ(prop("delivery_mode"), std::string("1"));
  CHECK_EQ(prop("h.tenant"), std::string("acme"));
  CHECK_EQ(prop("h.attempt"), std::string("3"));
  CHECK_EQ(prop("h.big"), std::to_string(std::int64_t(1) << 40));
  CHECK_EQ(prop("h.ok"), std::string("true"));
  CHECK_EQ(prop("h.ratio"), std::to_string(0.5));
  CHECK_EQ(prop("h.blob"), std::string("2"));
  CHECK_EQ(prop("h.at"), std::string("1600000000"));
  CHECK_EQ(prop("headers"), std::string("7"));

  ra::QueueStats s = q.stats();
  CHECK_EQ(s.published, std::uint64_t(5));
  CHECK(wait_for([&] { return q.stats().acked == 5; }, 5s));
  CHECK_EQ(s.handler_errors, std::uint64_t(0));
  CHECK_EQ(conn.close(5000), std::uint64_t(0));
}

// ---- 2. a handler that throws on every other message never acks ---------------

void test_throwing_handler() {
  LogCapture log;
  log.install(ra::LogLevel::Warn);
  const int n = 200;
  ra::Connection conn(g_uri);
  CHECK(conn.wait_connected(10000));
  ra::Queue q = conn.open_queue(qname("throw"), "", "", kQueueOpts);
  for (int i = 0; i < n; i++) q.publish("m-" + std::to_string(i));
  CHECK(wait_confirmed(q, n, 10s));

  std::mutex mu;
  std::map<int, int> seen;  // message -> deliveries
  std::set<int> acked;
  std::atomic<int> thrown{0};
  q.consume(
      [&](const ra::Delivery& d) {
        int i = std::stoi(std::string(d.body().substr(2)));
        int times;
        {
          std::lock_guard<std::mutex> lk(mu);
          times = ++seen[i];
        }
        if (i % 2 == 1 && times == 1) {
          thrown++;
          if (i % 4 == 1) throw std::runtime_error("boom " + std::to_string(i));
          throw 42;  // not a std::exception
        }
        std::lock_guard<std::mutex> lk(mu);
        acked.insert(i);
        return ra::Disposition::Ack;
      },
      2);
  CHECK(wait_for([&] { std::lock_guard<std::mutex> lk(mu); return acked.size() == std::size_t(n); }, 30s));
  CHECK(wait_for([&] { return q.stats().acked >= std::uint64_t(n); }, 10s));
  ra::QueueStats s = q.stats();
  CHECK_EQ(thrown.load(), n / 2);
  CHECK_EQ(s.handler_errors, std::uint64_t(n / 2));
  CHECK_EQ(s.requeued, std::uint64_t(n / 2));  // every throw requeued ...
  CHECK_EQ(s.acked, std::uint64_t(n));         // ... and acked only when handled
  CHECK_EQ(s.invalid_dispositions, std::uint64_t(0));
  {
    std::lock_guard<std::mutex> lk(mu);
    for (int i = 0; i < n; i++) {
      CHECK(acked.count(i) == 1);                   // 0 lost
      CHECK_EQ(seen[i], (i % 2 == 1) ? 2 : 1);      // thrown ones came back once
    }
  }
  CHECK(log.contains("consume handler threw (exception): boom 1; delivery"));
  CHECK(log.contains("consume handler threw (non-std exception)"));
  CHECK_EQ(conn.close(5000), std::uint64_t(0));
  ra::clear_log_callback();
}

// ---- 4. errors under concurrency: each call gets its own text -------------------

void test_errors_concurrent() {
  ra::Connection conn(g_uri);
  CHECK(conn.wait_connected(10000));
  std::atomic<int> ok{0}, bad{0};
  std::mutex mu;
  std::string first_bad;
  std::vector<std::thread> ts;
  std::atomic<int> ready{0};
  for (int t = 0; t < 8; t++) {
    ts.emplace_back([&, t] {
      ready++;
      while (ready.load() < 8) std::this_thread::yield();
      for (int round = 0; round < 50; round++) {
        std::string key = "bogus_key_" + std::to_string(t) + "_" + std::to_string(round);
        try {
          conn.open_queue(qname("err"), "", "", key + "=1");
          bad++;
        } catch (const ra::Error& e) {
          if (e.code() == AMQP_ERR_INVALID_ARGUMENT && e.message().find("'" + key + "'") != std::string::npos &&
              std::string(e.what()).rfind("AMQP_ERR_INVALID_ARGUMENT: ", 0) == 0) {
            ok++;
          } else {
            bad++;
            std::lock_guard<std::mutex> lk(mu);
            if (first_bad.empty()) first_bad = key + " -> " + e.what();
          }
        }
        // a non-_e call too: a publish on a handle that was never issued
        try {
          ra::Queue stale(0x1234567 + static_cast<amqp_queue_handle>(t));
          stale.publish(std::string_view("x"));
          bad++;
        } catch (const ra::Error& e) {
          if (e.code() == AMQP_ERR_INVALID_HANDLE) ok++; else bad++;
        }
      }
    });
  }
  for (auto& th : ts) th.join();
  if (!first_bad.empty()) std::cerr << "  first wrong error: " << first_bad << "\n";
  CHECK_EQ(bad.load(), 0);
  CHECK_EQ(ok.load(), 8 * 50 * 2);
  // A broker refusal carries the broker's text.
  std::string name = qname("err-406");
  conn.open_queue(name, "", "", "durable=false&expires_ms=60000");
  try {
    conn.open_queue(name, "", "", "durable=true&expires_ms=60000");
    CHECK(false);
  } catch (const ra::Error& e) {
    CHECK_EQ(e.code(), AMQP_ERR_BROKER);
    CHECK(e.message().find("406") != std::string::npos);
  }
  conn.close(5000);
}

// ---- 7. close returns the unsent count; stats; logs routed ----------------------

void test_close_unsent_stats_logs() {
  LogCapture log;
  log.install(ra::LogLevel::Warn);
  // Nothing listens on port 1: it keeps retrying, the messages stay buffered.
  ra::Connection conn("amqp://guest:guest@127.0.0.1:1/%2f", "reconnect_delay_ms=20&reconnect_delay_max_ms=50");
  CHECK(!conn.wait_connected(300));
  ra::Queue q = conn.open_queue("cpp-never", "", "", "");
  for (int i = 0; i < 7; i++) q.publish("unsent " + std::to_string(i));
  ra::QueueStats s = q.stats();
  CHECK_EQ(s.published, std::uint64_t(7));
  CHECK_EQ(s.buffered, std::uint64_t(7));
  amqp_connection_stats cs = conn.stats();
  CHECK(cs.failed_attempts >= 1);
  CHECK(cs.state == AMQP_STATE_CONNECTING || cs.state == AMQP_STATE_RECONNECTING);
  CHECK(wait_for([&] { return log.contains("127.0.0.1:1"); }, 5s));  // the library's WARN, routed
  auto t0 = Clock::now();
  CHECK_EQ(conn.close(300), std::uint64_t(7));
  CHECK(Clock::now() - t0 < 3s);
  CHECK(!conn);
  // the queue handle is gone with its connection
  try {
    q.publish(std::string_view("late"));
    CHECK(false);
  } catch (const ra::Error& e) {
    CHECK(e.code() == AMQP_ERR_INVALID_HANDLE || e.code() == AMQP_ERR_CLOSED);
  }
  ra::clear_log_callback();

  // close_ex on a live connection: all confirmed, nothing left.
  ra::Connection c2(g_uri);
  CHECK(c2.wait_connected(10000));
  ra::Queue q2 = c2.open_queue(qname("close"), "", "", kQueueOpts);
  for (int i = 0; i < 100; i++) q2.publish("c " + std::to_string(i));
  ra::CloseReport r = c2.close_ex(10000);
  CHECK_EQ(r.result, AMQP_OK);
  CHECK_EQ(r.unsent, std::uint64_t(0));
}

// ---- RAII: the destructor closes gracefully (waits for confirms) ---------------

void test_raii_destructor() {
  static_assert(!std::is_copy_constructible<ra::Connection>::value, "move-only");
  static_assert(!std::is_copy_constructible<ra::Queue>::value, "move-only");
  static_assert(std::is_nothrow_move_constructible<ra::Connection>::value, "movable");
  static_assert(std::is_nothrow_move_constructible<ra::Queue>::value, "movable");
  std::string name = qname("raii");
  {
    ra::Connection conn(g_uri);
    ra::Connection moved = std::move(conn);
    CHECK(!conn);
    ra::Queue q = moved.open_queue(name, "", "", kQueueOpts);  // maybe before connected: declared on connect
    ra::Queue q2 = std::move(q);
    for (int i = 0; i < 1000; i++) q2.publish("r " + std::to_string(i));
  }  // ~Queue, ~Connection: close waits for the confirms
  ra::Connection conn(g_uri);
  CHECK(conn.wait_connected(10000));
  ra::Queue q = conn.open_queue(name, "", "", kQueueOpts);
  std::atomic<int> n{0};
  q.consume([&](const ra::Delivery&) { n++; });  // void handler: ack
  CHECK(wait_for([&] { return n.load() >= 1000; }, 15s));
  std::this_thread::sleep_for(200ms);
  CHECK_EQ(n.load(), 1000);
}

// ---- stop / start; defer + settle ------------------------------------------------

void test_stop_start_defer() {
  ra::Connection conn(g_uri);
  CHECK(conn.wait_connected(10000));
  ra::Queue q = conn.open_queue(qname("stop"), "", "", kQueueOpts);
  std::atomic<int> n{0};
  std::mutex mu;
  std::vector<std::uint64_t> deferred;
  q.consume([&](const ra::Delivery& d) {
    n++;
    if (d.body() == "defer") {
      std::lock_guard<std::mutex> lk(mu);
      deferred.push_back(d.delivery_id());
      return ra::Disposition::Defer;
    }
    return ra::Disposition::Ack;
  });
  q.publish(std::string_view("one"));
  CHECK(wait_for([&] { return n.load() == 1; }, 10s));
  q.stop();
  q.publish(std::string_view("two"));
  CHECK(wait_confirmed(q, 2, 10s));
  std::this_thread::sleep_for(300ms);
  CHECK_EQ(n.load(), 1);  // stopped: nothing delivered
  q.start();
  CHECK(wait_for([&] { return n.load() == 2; }, 10s));
  q.publish(std::string_view("defer"));
  CHECK(wait_for([&] { return n.load() == 3; }, 10s));
  CHECK(wait_for([&] { return q.stats().unsettled == 1; }, 5s));
  std::uint64_t id;
  {
    std::lock_guard<std::mutex> lk(mu);
    id = deferred.at(0);
  }
  q.settle(id, ra::Disposition::Ack);
  try {
    q.settle(id, ra::Disposition::Ack);
    CHECK(false);
  } catch (const ra::Error& e) {
    CHECK_EQ(e.code(), AMQP_ERR_ALREADY_SETTLED);
  }
  CHECK(wait_for([&] { return q.stats().acked == 3; }, 5s));
  CHECK_EQ(conn.close(5000), std::uint64_t(0));
}

// ---- 6. fault test: connections closed every 0.5 s, 10,000 messages, 0 missing --

void test_fault_close_connections() {
  if (g_ctl.empty()) throw Failure("RESILIENT_AMQP_TEST_CTL is not set");
  const int n = 10000;
  ra::Connection conn(g_uri, "reconnect_delay_ms=50&reconnect_delay_max_ms=500");
  CHECK(conn.wait_connected(10000));
  ra::Queue q = conn.open_queue(qname("fault"), "", "", "durable=false&expires_ms=120000&prefetch=200");
  std::vector<std::atomic<std::uint8_t>> seen(n);
  std::atomic<int> distinct{0};
  std::atomic<std::uint64_t> deliveries{0};
  q.consume(
      [&](const ra::Delivery& d) {
        deliveries++;
        int i = std::stoi(std::string(d.body().substr(2)));
        if (i >= 0 && i < n && seen[i].exchange(1) == 0) distinct++;
      },
      2);
  std::atomic<bool> done{false};
  std::atomic<int> kills{0};
  std::thread killer([&] {
    std::string cmd = g_ctl + " close_all_connections test >/dev/null 2>&1";
    while (!done.load()) {
      std::this_thread::sleep_for(500ms);
      if (done.load()) break;
      if (std::system(cmd.c_str()) == 0) kills++;
    }
  });
  auto t0 = Clock::now();
  for (int i = 0; i < n; i++) {
    q.publish_wait("f-" + std::to_string(i), 60000);
    if (i % 100 == 99) std::this_thread::sleep_for(80ms);  // spread over ~8 s of kills
    // rabbitmqctl is slow on a loaded machine: each quarter waits for its close, so at
    // least 3 land while publishing and consuming
    if (i % 2500 == 2499 && i < n - 1) wait_for([&] { return kills.load() >= (i + 1) / 2500; }, 30s);
  }
  bool all = wait_for([&] { return distinct.load() == n; }, 120s);
  done = true;
  killer.join();
  auto secs = std::chrono::duration<double>(Clock::now() - t0).count();
  ra::QueueStats s = q.stats();
  amqp_connection_stats cs = conn.stats();
  std::cerr << "  fault: " << distinct.load() << "/" << n << " distinct, " << deliveries.load()
            << " deliveries, " << kills.load() << " close_all_connections, " << cs.connects << " connects, "
            << s.resent << " resent, " << secs << " s\n";
  CHECK(all);
  CHECK_EQ(distinct.load(), n);  // 0 missing (duplicates allowed)
  CHECK(kills.load() >= 3);
  CHECK(cs.connects >= 2);
  std::uint64_t unsent = conn.close(15000);
  CHECK_EQ(unsent, std::uint64_t(0));
}

// publish_confirmed: futures ready when the broker confirmed, failures with their status,
// UNSENT for what was pending when the connection closed.
void test_publish_confirmed() {
  ra::Connection conn(g_uri);
  CHECK(conn.wait_connected(15000));
  std::string x = qname("confirm-x");
  ra::Queue q = conn.open_queue(qname("confirm"), x, "orders.*", "exchange_type=topic&durable=false");
  std::vector<std::future<ra::Report>> fs;
  for (int i = 0; i < 1000; i++) fs.push_back(q.publish_confirmed("c-" + std::to_string(i)));
  q.publish("plain");  // reported too, and ignored
  auto unroutable = q.publish_confirmed("nobody", ra::Message().routing_key("nobody.home"));
  auto routed = q.publish_confirmed("routed", ra::Message().routing_key("orders.paid"));
  int confirmed = 0;
  for (auto& f : fs) {
    CHECK(f.wait_for(30s) == std::future_status::ready);
    if (f.get().confirmed()) confirmed++;
  }
  CHECK_EQ(confirmed, 1000);
  ra::Report u = unroutable.get();
  CHECK_EQ(int(u.status), int(AMQP_REPORT_UNROUTABLE));
  CHECK_EQ(u.reply_code, std::uint32_t(312));
  CHECK(u.reason.find("nobody.home") != std::string::npos);
  CHECK(routed.get().confirmed());
  CHECK_EQ(conn.close(10000), std::uint64_t(0));

  // Pending when the connection closes: UNSENT, not left hanging.
  ra::Connection dead("amqp://guest:guest@127.0.0.1:1/%2f", "reconnect_delay_ms=20&reconnect_delay_max_ms=50");
  ra::Queue dq = dead.open_queue(qname("confirm-dead"), "", "", kQueueOpts);
  auto pending = dq.publish_confirmed("never");
  CHECK_EQ(dead.close(100), std::uint64_t(1));
  CHECK(pending.wait_for(5s) == std::future_status::ready);
  CHECK_EQ(int(pending.get().status), int(AMQP_REPORT_UNSENT));
}

// Pull mode: a descriptor that turns readable, deliveries owned until destroyed, settled by
// id (also after destruction), poll_wake ending a blocked poll, CLOSED after close.
void test_pull_mode() {
  ra::Connection conn(g_uri);
  CHECK(conn.wait_connected(10000));
  ra::Queue q = conn.open_queue(qname("pull"), "", "", kQueueOpts);
  int fd = q.consume_pull();
  CHECK(fd >= 0);
  CHECK(q.poll(8, 0).empty());  // nothing yet: timeout, no exception
  for (int i = 0; i < 20; i++) q.publish("p-" + std::to_string(i));
  pollfd pfd{fd, POLLIN, 0};
  CHECK_EQ(::poll(&pfd, 1, 10000), 1);  // readable once deliveries wait
  std::vector<std::string> bodies;
  std::vector<std::uint64_t> ids;
  auto deadline = Clock::now() + 10s;
  while (bodies.size() < 20 && Clock::now() < deadline) {
    for (auto& d : q.poll(8, 1000)) {
      bodies.emplace_back(d.body());
      ids.push_back(d.delivery_id());
      CHECK(!d.view().redelivered());
    }  // each PolledDelivery frees its delivery here
  }
  CHECK_EQ(bodies.size(), std::size_t(20));
  CHECK_EQ(bodies.front(), std::string("p-0"));
  CHECK_EQ(bodies.back(), std::string("p-19"));
  CHECK_EQ(q.stats().unsettled, std::uint64_t(20));
  for (std::size_t i = 0; i < ids.size(); i++)
    q.settle(ids[i], i == 0 ? ra::Disposition::Requeue : ra::Disposition::Ack);
  auto again = q.poll(8, 10000);  // the requeued one comes back
  CHECK_EQ(again.size(), std::size_t(1));
  CHECK_EQ(again[0].body(), std::string("p-0"));
  CHECK(again[0].redelivered());
  q.settle(again[0].delivery_id(), ra::Disposition::Ack);
  CHECK(wait_for([&] { return q.stats().acked == 20; }, 5s));
  // poll_wake ends a poll blocked in another thread
  auto t0 = Clock::now();
  std::thread waker([&] {
    std::this_thread::sleep_for(200ms);
    q.poll_wake();
  });
  CHECK(q.poll(8, 20000).empty());
  waker.join();
  CHECK(Clock::now() - t0 < 10s);
  // consume_pull_cancel ends the pull consumer; a second one is refused
  q.consume_pull_cancel(5000);
  q.publish("after-cancel");
  CHECK(wait_for([&] { return q.stats().confirmed == 21; }, 5s));
  CHECK(q.poll(8, 300).empty());  // nothing reaches a cancelled pull consumer
  try {
    q.consume_pull_cancel(0);
    CHECK(false);
  } catch (const ra::Error& e) {
    CHECK(e.code() == AMQP_ERR_INVALID_ARGUMENT);
  }
  int fd2 = q.consume_pull();  // a new one gets what waited at the broker
  auto later = q.poll(8, 10000);
  CHECK_EQ(later.size(), std::size_t(1));
  CHECK_EQ(later[0].body(), std::string("after-cancel"));
  q.settle(later[0].delivery_id(), ra::Disposition::Ack);
  ::close(fd2);
  CHECK_EQ(conn.close(5000), std::uint64_t(0));
  try {
    q.poll(8, 0);
    CHECK(false);
  } catch (const ra::Error& e) {
    CHECK(e.code() == AMQP_ERR_CLOSED || e.code() == AMQP_ERR_INVALID_HANDLE);
  }
  ::close(fd);
}

struct Test {
  const char* name;
  void (*fn)();
};
const Test kTests[] = {
    {"roundtrip", test_roundtrip},
    {"throwing_handler", test_throwing_handler},
    {"errors_concurrent", test_errors_concurrent},
    {"close_unsent_stats_logs", test_close_unsent_stats_logs},
    {"raii_destructor", test_raii_destructor},
    {"stop_start_defer", test_stop_start_defer},
    {"fault_close_connections", test_fault_close_connections},
    {"publish_confirmed", test_publish_confirmed},
    {"pull_mode", test_pull_mode},
};

}  // namespace

int main(int argc, char** argv) {
  const char* uri = std::getenv("RESILIENT_AMQP_TEST_URI");
  if (!uri || !*uri) {
    std::cerr << "RESILIENT_AMQP_TEST_URI is not set\n";
    return 2;
  }
  g_uri = uri;
  if (const char* ctl = std::getenv("RESILIENT_AMQP_TEST_CTL")) g_ctl = ctl;
  std::set<std::string> only(argv + 1, argv + argc);
  int passed = 0, failed = 0;
  for (const Test& t : kTests) {
    if (!only.empty() && !only.count(t.name)) continue;
    auto t0 = Clock::now();
    try {
      t.fn();
      passed++;
      std::cout << "PASS " << t.name;
    } catch (const std::exception& e) {
      failed++;
      std::cout << "FAIL " << t.name << ": " << e.what();
    }
    std::cout << " (" << std::chrono::duration<double>(Clock::now() - t0).count() << " s)" << std::endl;
  }
  std::cout << "cpp tests: " << passed << " passed, " << failed << " failed" << std::endl;
  return failed == 0 && passed > 0 ? 0 : 1;
}
