# frozen_string_literal: true

require_relative "test_helper"

class TestRoundtrip < Minitest::Test
  include TestHelper

  def test_bytes_strings_properties_headers
    ResilientAmqp.connect(URI) do |conn|
      assert conn.wait_connected(10_000)
      q = conn.queue(qname("roundtrip"), options: QUEUE_OPTS)
      q.publish("\x00\x01\xff\x00".b)                 # bytes
      q.publish("héllo wörld")                          # a UTF-8 String
      q.publish("")
      q.publish('{"n":1}',
                content_type: "application/json", correlation_id: "corr-42", reply_to: "replies",
                message_id: "id-7", type: "order.created", app_id: "rb-test", expiration: "60000",
                timestamp: Time.at(1_700_000_000), priority: 3, persistent: false,
                headers: { "tenant" => "acme", "attempt" => 3, "big" => 1 << 40, "ok" => true,
                           "ratio" => 0.5, "blob" => "\x00\x01".b, "at" => Time.at(1_600_000_000),
                           "list" => [1, "two", false], "nested" => { "k" => "v" }, "none" => nil })
      got = Thread::Queue.new
      q.consume { |d| got << d }
      ds = Array.new(4) { Timeout.timeout(10) { got.pop } }
      assert_equal "\x00\x01\xff\x00".b, ds[0].body
      assert_equal Encoding::BINARY, ds[0].body.encoding
      assert_equal "héllo wörld", ds[1].body.force_encoding(Encoding::UTF_8)
      assert_equal "", ds[2].body
      d = ds[3]
      assert_equal '{"n":1}', d.body
      assert_equal "application/json", d.properties[:content_type]
      assert_equal "corr-42", d.properties[:correlation_id]
      assert_equal "replies", d.properties[:reply_to]
      assert_equal "id-7", d.properties[:message_id]
      assert_equal "order.created", d.properties[:type]
      assert_equal "rb-test", d.properties[:app_id]
      assert_equal "60000", d.properties[:expiration]
      assert_equal Time.at(1_700_000_000), d.properties[:timestamp]
      assert_equal 3, d.properties[:priority]
      assert_equal 1, d.properties[:delivery_mode]
      h = d.headers
      assert_equal "acme", h["tenant"]
      assert_equal Encoding::UTF_8, h["tenant"].encoding
      assert_equal 3, h["attempt"]
      assert_equal 1 << 40, h["big"]
      assert_equal true, h["ok"]
      assert_in_delta 0.5, h["ratio"]
      assert_equal "\x00\x01".b, h["blob"]
      assert_equal Time.at(1_600_000_000), h["at"]
      assert_equal [1, "two", false], h["list"]
      assert_equal({ "k" => "v" }, h["nested"])
      assert h.key?("none")
      assert_nil h["none"]
      assert_equal q.name, d.routing_key
      refute d.redelivered?
      assert wait_for(5) { q.stats[:acked] == 4 }
      assert_equal 4, q.stats[:published]
      assert_equal 0, conn.close(5000)
    end
  end

  def test_bad_property_is_an_error_nothing_stored
    ResilientAmqp.connect(URI) do |conn|
      q = conn.queue(qname("badprop"), options: QUEUE_OPTS)
      e = assert_raises(ResilientAmqp::InvalidArgumentError) { q.publish("x", expiration: "soon") }
      assert_equal ResilientAmqp::Native::ERR_INVALID_ARGUMENT, e.code
      assert_match(/expiration/, e.text)
      assert_raises(ArgumentError) { q.publish("x", colour: "red") }
      assert_equal 0, q.stats[:published]
    end
  end

  def test_block_form_closes_even_when_the_block_raises
    conn = nil
    assert_raises(RuntimeError) do
      ResilientAmqp.connect(URI) do |c|
        conn = c
        raise "inside"
      end
    end
    assert conn.closed?
    assert_raises(ResilientAmqp::InvalidHandleError) { conn.stats }
  end

  def test_stop_start
    ResilientAmqp.connect(URI) do |conn|
      assert conn.wait_connected(10_000)
      q = conn.queue(qname("stop"), options: QUEUE_OPTS)
      n = 0
      m = Mutex.new
      q.consume { m.synchronize { n += 1 } }
      q.publish("one")
      assert wait_for(10) { m.synchronize { n } == 1 }
      q.stop
      q.publish("two")
      assert wait_for(10) { q.stats[:confirmed] == 2 }
      sleep 0.3
      assert_equal 1, m.synchronize { n }
      q.start
      assert wait_for(10) { m.synchronize { n } == 2 }
    end
  end

  # Consumer#cancel ends the queue's pull consumer at the broker too
  # (amqp_consume_pull_cancel): its consumer count drops to 0, and a new
  # consumer afterwards gets what is published next.
  def test_cancel_ends_the_broker_consumer
    flunk "RESILIENT_AMQP_TEST_CTL is not set" if CTL.empty?
    ResilientAmqp.connect(URI) do |conn|
      assert conn.wait_connected(10_000)
      name = qname("cancel")
      q = conn.queue(name, options: QUEUE_OPTS)
      consumers = lambda do
        `#{CTL} -q list_queues --no-table-headers name consumers 2>/dev/null`
          .lines.map(&:split).find { |row| row[0] == name }&.fetch(1)&.to_i
      end
      got = Thread::Queue.new
      c = q.consume { |d| got << d.body }
      q.publish("one")
      assert_equal "one", Timeout.timeout(10) { got.pop }
      assert wait_for(10) { consumers.call == 1 }
      c.cancel(10)
      assert wait_for(10) { consumers.call == 0 }, "the broker consumer was not cancelled"
      q.consume { |d| got << d.body }
      q.publish("two")
      assert_equal "two", Timeout.timeout(10) { got.pop }
    end
  end
end
