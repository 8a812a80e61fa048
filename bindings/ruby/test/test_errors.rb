# frozen_string_literal: true

require_relative "test_helper"

class TestErrors < Minitest::Test
  include TestHelper

  # 8 threads fail at once, each with its own bad option: each error carries
  # the library's code and its own text (the _e variants).
  def test_concurrent_failures_get_their_own_text
    ResilientAmqp.connect(URI) do |conn|
      assert conn.wait_connected(10_000)
      wrong = []
      ok = 0
      m = Mutex.new
      gate = Thread::Queue.new
      threads = Array.new(8) do |t|
        Thread.new do
          gate.pop
          40.times do |round|
            key = "bogus_key_#{t}_#{round}"
            begin
              conn.queue(qname("err"), options: "#{key}=1")
              m.synchronize { wrong << "#{key}: no error" }
            rescue ResilientAmqp::Error => e
              good = e.is_a?(ResilientAmqp::InvalidArgumentError) &&
                     e.code == ResilientAmqp::Native::ERR_INVALID_ARGUMENT &&
                     e.code_name == "AMQP_ERR_INVALID_ARGUMENT" &&
                     e.text.include?("'#{key}'") && e.message.start_with?("AMQP_ERR_INVALID_ARGUMENT: ")
              m.synchronize { good ? ok += 1 : wrong << "#{key}: #{e.message}" }
            end
            # a call that is not an _e variant: amqp_last_error on the same thread
            begin
              ResilientAmqp::Queue.new(conn, 0x1234567 + t).publish("x")
              m.synchronize { wrong << "publish on a bad handle: no error" }
            rescue ResilientAmqp::InvalidHandleError => e
              m.synchronize { e.code == ResilientAmqp::Native::ERR_INVALID_HANDLE ? ok += 1 : wrong << e.message }
            end
          end
        end
      end
      8.times { gate << :go }
      threads.each(&:join)
      assert_empty wrong.first(3)
      assert_equal 8 * 40 * 2, ok
    end
  end

  def test_broker_refusal_carries_the_brokers_text
    ResilientAmqp.connect(URI) do |conn|
      assert conn.wait_connected(10_000)
      name = qname("err406")
      conn.queue(name, options: { durable: false, expires_ms: 60_000 })
      e = assert_raises(ResilientAmqp::BrokerError) { conn.queue(name, options: { durable: true, expires_ms: 60_000 }) }
      assert_equal ResilientAmqp::Native::ERR_BROKER, e.code
      assert_match(/406 PRECONDITION_FAILED/, e.text)
    end
  end

  def test_bad_uri
    e = assert_raises(ResilientAmqp::InvalidArgumentError) { ResilientAmqp::Connection.new("http://nope") }
    refute_empty e.text
  end
end
