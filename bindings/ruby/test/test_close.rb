# frozen_string_literal: true

require_relative "test_helper"

class TestClose < Minitest::Test
  include TestHelper

  # Nothing listens on port 1: messages stay buffered; close returns them
  # as unsent; stats readable; the library's WARN lines reach the Logger.
  def test_close_returns_unsent_stats_and_logs
    log = CaptureLogger.new
    ResilientAmqp.logger = log
    conn = ResilientAmqp::Connection.new("amqp://guest:guest@127.0.0.1:1/%2f",
                                         reconnect_delay_ms: 20, reconnect_delay_max_ms: 50)
    refute conn.wait_connected(300)
    q = conn.queue("rb-never")
    7.times { |i| q.publish("unsent #{i}") }
    s = q.stats
    assert_equal 7, s[:published]
    assert_equal 7, s[:buffered]
    cs = conn.stats
    assert_operator cs[:failed_attempts], :>=, 1
    assert_includes %i[connecting reconnecting], cs[:state]
    assert wait_for(5) { log.text.include?("127.0.0.1:1") }, "no library log line routed: #{log.text.inspect}"
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    report = conn.close_report(300)
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0, :<, 3
    assert_equal 7, report[:unsent]
    assert_equal :timeout, report[:result]
    assert conn.closed?
    assert_raises(ResilientAmqp::Error) { q.publish("late") }
    assert_raises(ResilientAmqp::InvalidHandleError) { conn.close }
  ensure
    ResilientAmqp.logger = nil
  end

  def test_close_after_publishing_everything_confirmed
    conn = ResilientAmqp.connect(URI)
    assert conn.wait_connected(10_000)
    q = conn.queue(qname("close"), options: QUEUE_OPTS)
    500.times { |i| q.publish("c #{i}") }
    assert_equal 0, conn.close(10_000)
  end

  # A process that exits without closing, with a consumer polling and
  # messages in flight, exits promptly and cleanly (5 times).
  def test_exit_without_close
    script = <<~RUBY
      $LOAD_PATH.unshift #{File.expand_path('../lib', __dir__).inspect}
      require "resilient_amqp"
      require "logger"
      ResilientAmqp.logger = Logger.new(IO::NULL)
      conn = ResilientAmqp::Connection.new(#{URI.inspect})
      conn.wait_connected(10_000)
      q = conn.queue(#{qname('exit').inspect}, options: #{QUEUE_OPTS.inspect})
      q.consume(threads: 2) { |d| sleep 0.001 }
      2000.times { |i| q.publish("e" * 64) }
      sleep 0.2
      puts "exiting"
    RUBY
    5.times do |run|
      t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      out = IO.popen([RbConfig.ruby, "-e", script], err: %i[child out], &:read)
      took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
      assert $?.success?, "run #{run}: exit status #{$?.inspect}: #{out}"
      assert_equal "exiting\n", out, "run #{run}"
      assert_operator took, :<, 15, "run #{run} took #{took} s"
    end
  end
end
