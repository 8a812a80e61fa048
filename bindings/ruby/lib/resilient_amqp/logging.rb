# frozen_string_literal: true

require "logger"

module ResilientAmqp
  # Logs into a Ruby Logger.
  #
  # The binding's own lines (a consumer block that raised) are written on
  # the Ruby thread where they happen. The library's lines come from its
  # "ramqp-log" thread through amqp_set_log_callback; ruby-ffi never runs Ruby
  # code on a thread Ruby does not know: it hands such a call to its own
  # callback-dispatcher Ruby thread (and the library's log thread waits for
  # it), so no Ruby code runs on a library thread. Turned off again at exit.
  module Logging
    LEVELS = { Logger::DEBUG => 4, Logger::INFO => 3, Logger::WARN => 2, Logger::ERROR => 1,
               Logger::FATAL => 1, Logger::UNKNOWN => 1 }.freeze
    SEVERITY = { 1 => Logger::ERROR, 2 => Logger::WARN, 3 => Logger::INFO, 4 => Logger::DEBUG }.freeze

    @mutex = Mutex.new
    @logger = nil
    @callback = nil

    class << self
      attr_reader :logger

      # Routes the library's log lines at the logger's level and more severe
      # (`level:` overrides: :debug, :info, :warn, :error) to `logger`; nil
      # turns that off (the library is then silent unless RESILIENT_AMQP_LOG
      # is set, which logs to stderr).
      def logger=(logger)
        set_logger(logger)
      end

      def set_logger(logger, level: nil)
        @mutex.synchronize do
          if logger.nil?
            Native.amqp_set_log_callback(nil, 0, nil)
            @logger = nil
            # @callback stays referenced: the library may be in a last call
            return
          end
          lvl = level ? { debug: 4, info: 3, warn: 2, error: 1 }.fetch(level) : LEVELS.fetch(logger.level, 3)
          cb = proc do |l, msg, _ud|
            logger.add(SEVERITY.fetch(l, Logger::INFO), msg, "resilient_amqp")
          rescue Exception # rubocop:disable Lint/RescueException -- never into the library
            nil
          end
          Errors.check(Native.amqp_set_log_callback(cb, lvl, nil), "amqp_set_log_callback")
          (@old_callbacks ||= []) << @callback if @callback
          @callback = cb
          @logger = logger
        end
      end

      # The binding's own lines: to the logger set, else to stderr.
      def warn(message)
        (@logger || default_logger).warn("resilient_amqp") { message }
      rescue StandardError
        nil
      end

      def default_logger
        @default_logger ||= Logger.new($stderr, level: Logger::WARN)
      end
    end
  end
end
