# frozen_string_literal: true

require_relative "test_helper"

class TestConfirmed < Minitest::Test
  include TestHelper

  # publish_confirmed returns once the broker confirmed; an unroutable message
  # raises PublishError with the broker's 312; plain publishes on the same
  # queue are reported and ignored.
  def test_publish_confirmed_waits_for_the_broker
    ResilientAmqp.connect(URI) do |conn|
      assert conn.wait_connected(15_000)
      x = qname("confirm-x")
      q = conn.queue(qname("confirm"), exchange: x, routing_key: "orders.*",
                                       options: QUEUE_OPTS.merge(exchange_type: "topic"))
      threads = 4.times.map do |t|
        Thread.new { 50.times.map { |i| q.publish_confirmed("c-#{t}-#{i}", timeout_ms: 30_000) } }
      end
      q.publish("plain")
      attempts = threads.flat_map(&:value)
      assert_equal 200, attempts.size
      assert(attempts.all? { |a| a >= 1 })
      err = assert_raises(ResilientAmqp::PublishError) do
        q.publish_confirmed("nobody", routing_key: "nobody.home", timeout_ms: 30_000)
      end
      assert_equal :unroutable, err.status
      assert_equal 312, err.reply_code
      assert_includes err.reason, "nobody.home"
      assert_equal 1, q.publish_confirmed("routed", routing_key: "orders.paid", timeout_ms: 30_000)
      assert_equal 0, conn.close(10_000)
    end
  end

  # Pending when the connection closes: PublishError :unsent, not a hang.
  def test_pending_confirmations_end_unsent_at_close
    conn = ResilientAmqp::Connection.new("amqp://guest:guest@127.0.0.1:1/%2f",
                                         reconnect_delay_ms: 20, reconnect_delay_max_ms: 50)
    q = conn.queue(qname("confirm-dead"))
    waiting = Thread.new do
      q.publish_confirmed("never", timeout_ms: 30_000)
    rescue ResilientAmqp::PublishError => e
      e
    end
    sleep 0.2
    assert_equal 1, conn.close(100)
    err = waiting.value
    assert_kind_of ResilientAmqp::PublishError, err
    assert_equal :unsent, err.status
  end
end
