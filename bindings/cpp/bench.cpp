// bench_cpp URI QUEUE N SIZE: publishes N messages of SIZE bytes to QUEUE
// (publish_wait, waiting until all are confirmed), then consumes them all with
// ack through a lambda handler (consume repeat 1, prefetch 500, as the C
// bench's consume case), and prints one line:
//   BENCH cpp publish <msg/s> consume <msg/s>
#include <resilient_amqp.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace ra = resilient_amqp;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s URI QUEUE N SIZE\n", argv[0]);
    return 2;
  }
  const std::string uri = argv[1], queue = argv[2];
  const std::uint64_t n = std::strtoull(argv[3], nullptr, 10);
  const std::size_t size = std::strtoull(argv[4], nullptr, 10);
  try {
    ra::Connection conn(uri);
    if (!conn.wait_connected(10000)) throw std::runtime_error("not connected after 10 s");
    ra::Queue q = conn.open_queue(queue, "", "", "durable=false&prefetch=500");
    std::vector<char> body(size, 'x');

    auto t0 = Clock::now();
    for (std::uint64_t i = 0; i < n; i++) q.publish_wait(body.data(), body.size(), 60000);
    while (q.stats().confirmed < n) {
      if (Clock::now() - t0 > std::chrono::seconds(300)) throw std::runtime_error("not confirmed in 300 s");
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    double pub = n / std::chrono::duration<double>(Clock::now() - t0).count();

    std::atomic<std::uint64_t> count{0}, bad{0};
    std::atomic<std::int64_t> t_last{0};
    auto t1 = Clock::now();
    q.consume([&](const ra::Delivery& d) {
      if (d.size() != size) bad++;
      if (count.fetch_add(1, std::memory_order_relaxed) + 1 == n)
        t_last = Clock::now().time_since_epoch().count();
      return ra::Disposition::Ack;
    });
    while (count.load() < n) {
      if (Clock::now() - t1 > std::chrono::seconds(300)) throw std::runtime_error("not consumed in 300 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    auto end = Clock::time_point(Clock::duration(t_last.load()));
    double con = n / std::chrono::duration<double>(end - t1).count();
    while (q.stats().acked < n && Clock::now() - t1 < std::chrono::seconds(310))
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (bad.load() != 0) throw std::runtime_error("bodies of the wrong size");
    std::uint64_t unsent = conn.close(10000);
    if (unsent != 0) throw std::runtime_error("unsent at close");
    std::printf("BENCH cpp publish %.0f consume %.0f\n", pub, con);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cpp: %s\n", e.what());
    return 1;
  }
  return 0;
}
