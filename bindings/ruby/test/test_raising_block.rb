# frozen_string_literal: true

require_relative "test_helper"

class TestRaisingBlock < Minitest::Test
  include TestHelper

  # A block that raises on every other message never acks it: requeued,
  # redelivered, logged and counted; 0 lost.
  def test_raise_on_every_other_message_never_acks
    log = CaptureLogger.new
    ResilientAmqp.logger = log
    n = 200
    ResilientAmqp.connect(URI) do |conn|
      assert conn.wait_connected(10_000)
      q = conn.queue(qname("raise"), options: QUEUE_OPTS)
      n.times { |i| q.publish("m-#{i}") }
      assert wait_for(10) { q.stats[:confirmed] == n }
      seen = Hash.new(0)
      acked = Set.new
      raised = 0
      m = Mutex.new
      q.consume(threads: 2, batch: 16) do |d|
        i = d.body[2..].to_i
        times = m.synchronize { seen[i] += 1 }
        if i.odd? && times == 1
          m.synchronize { raised += 1 }
          raise ArgumentError, "boom #{i}" if i % 4 == 1

          raise NotImplementedError, "not a StandardError #{i}" # a ScriptError
        end
        m.synchronize { acked << i }
      end
      assert wait_for(30) { m.synchronize { acked.size } == n }, "only #{acked.size} of #{n} acked"
      assert wait_for(10) { q.stats[:acked] >= n }
      s = q.stats
      assert_equal n / 2, m.synchronize { raised }
      assert_equal n / 2, s[:handler_errors]
      assert_equal n / 2, s[:requeued]             # every raise requeued ...
      assert_equal n, s[:acked]                    # ... acked only once handled
      m.synchronize do
        n.times do |i|
          assert acked.include?(i), "message #{i} lost"
          assert_equal(i.odd? ? 2 : 1, seen[i], "message #{i}")
        end
      end
      assert_equal 0, conn.close(5000)
    end
    assert_match(/consumer block raised ArgumentError: boom 1; delivery \d+ requeued/, log.text)
    assert_match(/consumer block raised NotImplementedError/, log.text)
  ensure
    ResilientAmqp.logger = nil
  end

  def test_explicit_reject_and_requeue
    ResilientAmqp.connect(URI) do |conn|
      assert conn.wait_connected(10_000)
      q = conn.queue(qname("disp"), options: QUEUE_OPTS)
      %w[keep drop again].each { |b| q.publish(b) }
      again = 0
      m = Mutex.new
      q.consume do |d|
        case d.body
        when "drop" then d.reject!
        when "again" then d.requeue! if m.synchronize { (again += 1) == 1 }
        end
      end
      assert wait_for(10) { q.stats[:acked] == 2 && q.stats[:rejected] == 1 }
      assert_equal 1, q.stats[:requeued]
      assert_equal 0, q.stats[:handler_errors]
    end
  end
end
