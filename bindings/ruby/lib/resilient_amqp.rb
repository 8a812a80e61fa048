# frozen_string_literal: true

# resilient-amqp for Ruby: the C ABI of libresilient_amqp.so through ruby-ffi.
#
#   ResilientAmqp.connect("amqp://guest:guest@127.0.0.1:5672/%2f") do |conn|
#     q = conn.queue("orders", exchange: "shop", routing_key: "order.created")
#     q.publish("hello", content_type: "text/plain")
#     q.consume { |d| puts d.body }          # a raise here requeues, never acks
#     sleep 1
#   end                                       # closes gracefully
require_relative "resilient_amqp/version"
require_relative "resilient_amqp/native"
require_relative "resilient_amqp/error"
require_relative "resilient_amqp/headers"
require_relative "resilient_amqp/logging"
require_relative "resilient_amqp/delivery"
require_relative "resilient_amqp/consumer"
require_relative "resilient_amqp/confirmations"
require_relative "resilient_amqp/queue"
require_relative "resilient_amqp/connection"

module ResilientAmqp
  DEFAULT_CLOSE_TIMEOUT_MS = 10_000

  class << self
    # Connection.new; with a block, yields it and closes it gracefully at the
    # end (also when the block raises), returning the block's value.
    def connect(uri, options = nil, close_timeout_ms: DEFAULT_CLOSE_TIMEOUT_MS)
      conn = Connection.new(uri, options)
      return conn unless block_given?

      begin
        yield conn
      ensure
        conn.close(close_timeout_ms) unless conn.closed?
      end
    end

    # Library logs to a Ruby Logger (see Logging).
    def logger=(logger)
      Logging.logger = logger
    end

    def logger
      Logging.logger
    end

    def abi_version
      Native.amqp_abi_version
    end

    # {durable: false, prefetch: 50} -> "durable=false&prefetch=50"
    def options_string(options)
      case options
      when nil then nil
      when String then options
      when Hash then options.map { |k, v| "#{k}=#{v}" }.join("&")
      else raise ArgumentError, "options must be a String or a Hash"
      end
    end
  end
end

at_exit do
  ResilientAmqp::Consumer.wake_all
  ResilientAmqp::Native.amqp_set_log_callback(nil, 0, nil) if ResilientAmqp::Logging.logger
end
