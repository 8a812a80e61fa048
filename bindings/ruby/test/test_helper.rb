# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "minitest/autorun"
require "logger"
require "stringio"
require "set"
require "timeout"
require "resilient_amqp"

module TestHelper
  URI = ENV.fetch("RESILIENT_AMQP_TEST_URI")
  CTL = ENV.fetch("RESILIENT_AMQP_TEST_CTL", "")
  QUEUE_OPTS = { durable: false, expires_ms: 60_000, prefetch: 50 }.freeze

  def qname(what)
    "rb-test-#{what}-#{Process.pid}"
  end

  def wait_for(seconds)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
    until yield
      return false if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.005
    end
    true
  end

  # A Logger that keeps its lines.
  class CaptureLogger < Logger
    def initialize(level = Logger::WARN)
      @io = StringIO.new
      @mutex = Mutex.new
      super(@io, level: level)
    end

    def add(*args, &block)
      @mutex.synchronize { super }
    end

    def text
      @mutex.synchronize { @io.string.dup }
    end
  end
end
