# frozen_string_literal: true

require_relative "test_helper"

class TestFault < Minitest::Test
  include TestHelper

  # The broker's connections closed every 0.5 s while 10,000 messages are
  # published and consumed: 0 missing (duplicates allowed).
  def test_close_all_connections_every_half_second
    skip "RESILIENT_AMQP_TEST_CTL not set" if CTL.empty? && ENV["RESILIENT_AMQP_ALLOW_SKIP"]
    flunk "RESILIENT_AMQP_TEST_CTL is not set" if CTL.empty?
    n = 10_000
    conn = ResilientAmqp::Connection.new(URI, reconnect_delay_ms: 50, reconnect_delay_max_ms: 500)
    assert conn.wait_connected(10_000)
    q = conn.queue(qname("fault"), options: { durable: false, expires_ms: 120_000, prefetch: 200 })
    seen = Array.new(n, false)
    distinct = 0
    deliveries = 0
    m = Mutex.new
    q.consume(threads: 1) do |d|
      i = d.body[2..].to_i
      m.synchronize do
        deliveries += 1
        unless seen[i]
          seen[i] = true
          distinct += 1
        end
      end
    end
    done = false
    kills = 0
    killer = Thread.new do
      until done
        sleep 0.5
        break if done

        kills += 1 if system("#{CTL} close_all_connections test >/dev/null 2>&1")
      end
    end
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    n.times do |i|
      # rabbitmqctl is slow on a loaded machine: 3 kills land before the last 1,000 publishes
      wait_for(60) { kills >= 3 } if i == n - 1000
      q.publish_wait("f-#{i}", timeout_ms: 60_000)
      sleep 0.08 if i % 100 == 99 # spread over ~8 s of kills
    end
    all = wait_for(120) { m.synchronize { distinct } == n }
    done = true
    killer.join
    cs = conn.stats
    s = q.stats
    warn format("  fault: %d/%d distinct, %d deliveries, %d close_all_connections, %d connects, %d resent, %.1f s",
                distinct, n, deliveries, kills, cs[:connects], s[:resent],
                Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0)
    assert all, "missing: #{n - distinct}"
    assert_equal n, distinct
    assert_operator kills, :>=, 3
    assert_operator cs[:connects], :>=, 2
    assert_equal 0, conn.close(15_000)
  end
end
