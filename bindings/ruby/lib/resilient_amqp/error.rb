# frozen_string_literal: true

module ResilientAmqp
  # A failed library call: #code (the amqp_result number), #code_name
  # ("AMQP_ERR_BROKER"), #text (the library's message, e.g. the broker's
  # "406 PRECONDITION_FAILED - ..."); #message is "AMQP_ERR_...: text".
  class Error < StandardError
    attr_reader :code, :code_name, :text

    def initialize(code, text)
      @code = code
      @code_name = Native.amqp_result_str(code)
      @text = text
      super("#{@code_name}: #{text}")
    end
  end

  # Subclasses by code, so callers can `rescue ResilientAmqp::BufferFullError`.
  class InvalidArgumentError < Error; end
  class InvalidHandleError < Error; end
  class BufferFullError < Error; end
  class MessageTooLargeError < Error; end
  class ClosedError < Error; end
  class TimeoutError < Error; end
  class NotConnectedError < Error; end
  class BrokerError < Error; end
  class InternalError < Error; end
  class StaleDeliveryError < Error; end
  class AlreadySettledError < Error; end

  # A message published with Queue#publish_confirmed that the broker did not
  # take: #status (:nacked, :refused, :too_large, :expired, :unsent,
  # :unroutable), #reply_code (the broker's, or 0), #reason.
  class PublishError < StandardError
    attr_reader :status, :reply_code, :reason

    def initialize(status, reply_code, reason)
      @status = status
      @reply_code = reply_code
      @reason = reason
      super("#{status}: #{reason}")
    end
  end

  ERROR_CLASSES = {
    1 => InvalidArgumentError, 2 => InvalidHandleError, 3 => BufferFullError,
    4 => MessageTooLargeError, 5 => ClosedError, 6 => TimeoutError, 7 => NotConnectedError,
    8 => BrokerError, 9 => InternalError, 10 => StaleDeliveryError, 11 => AlreadySettledError
  }.freeze

  ERRCAP = 512

  # Raising helpers. `check` is for calls that are not `_e` variants: it reads
  # amqp_last_error right after the call, on the same Ruby thread, which is
  # the same OS thread (Ruby threads are native threads), so concurrent
  # failures each get their own text. `check_e` takes the text the `_e`
  # variant wrote into `errbuf` in the same call.
  module Errors
    module_function

    def error(code, text)
      (ERROR_CLASSES[code] || Error).new(code, text)
    end

    def check(code, what)
      return if code == Native::OK

      buf = FFI::MemoryPointer.new(:char, ERRCAP)
      Native.amqp_last_error(buf, ERRCAP)
      text = buf.read_string
      raise error(code, text.empty? ? what : text)
    end

    def check_e(code, errbuf, what)
      return if code == Native::OK

      text = errbuf.read_string
      raise error(code, text.empty? ? what : text)
    end
  end
end
