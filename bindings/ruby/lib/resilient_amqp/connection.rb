# frozen_string_literal: true

module ResilientAmqp
  # A connection: connects and reconnects in the background (a broker that
  # is down is not an error). Close it with #close (or use the block form,
  # ResilientAmqp.connect(uri) { |conn| ... }).
  class Connection
    attr_reader :handle

    def initialize(uri, options = nil)
      out = FFI::MemoryPointer.new(:uint64)
      Errors.check(Native.amqp_connect(uri, ResilientAmqp.options_string(options), out), "amqp_connect")
      @handle = out.read_uint64
      @consumers = []
      @mutex = Mutex.new
    end

    # true once connected, false after timeout_ms; raises ClosedError once it
    # gave up for good (e.g. the broker refused the login). GVL released.
    def wait_connected(timeout_ms = 10_000)
      buf = FFI::MemoryPointer.new(:char, ERRCAP)
      rc = Native.amqp_wait_connected_e(live_handle, timeout_ms, buf, ERRCAP)
      return false if rc == Native::ERR_TIMEOUT

      Errors.check_e(rc, buf, "amqp_wait_connected")
      true
    end

    # Opens a queue on its own channel. `options`: a String
    # ("durable=false&prefetch=50") or a Hash ({durable: false, prefetch: 50}).
    # While connected the declares happen now (BrokerError if refused).
    def queue(name, exchange: nil, routing_key: nil, options: nil)
      out = FFI::MemoryPointer.new(:uint64)
      buf = FFI::MemoryPointer.new(:char, ERRCAP)
      rc = Native.amqp_queue_open_e(live_handle, name, exchange, routing_key, ResilientAmqp.options_string(options),
                                    out, buf, ERRCAP)
      Errors.check_e(rc, buf, "amqp_queue_open")
      Queue.new(self, out.read_uint64)
    end

    # Graceful close: refuses new publishes, waits up to timeout_ms for every
    # confirm and for the consumers' current batches, then frees the
    # connection and its queues. Returns the number of messages not confirmed
    # (0: everything reached the broker). Consumer threads end by themselves
    # (their poll returns CLOSED) and are joined. Never call it from inside a
    # consumer block of this connection (it would wait for that block's batch
    # until timeout_ms).
    def close(timeout_ms = 10_000)
      close_report(timeout_ms)[:unsent]
    end

    # As #close, with what was left at the deadline:
    # {result: :ok|:timeout, unsent:, unsettled:, callbacks_running:}.
    def close_report(timeout_ms = 10_000)
      h = @mutex.synchronize { @handle.tap { @handle = nil } }
      raise InvalidHandleError.new(Native::ERR_INVALID_HANDLE, "connection already closed") if h.nil?

      report = Native::CloseReport.new
      report[:size] = Native::CloseReport.size
      buf = FFI::MemoryPointer.new(:char, ERRCAP)
      rc = Native.amqp_close_ex_e(h, timeout_ms, report.pointer, buf, ERRCAP)
      consumers = @mutex.synchronize { @consumers.dup.tap { @consumers.clear } }
      consumers.each { |c| c.join_after_close(timeout_ms) }
      Errors.check_e(rc, buf, "amqp_close_ex") unless [Native::OK, Native::ERR_TIMEOUT].include?(rc)
      { result: rc == Native::OK ? :ok : :timeout, unsent: report[:unsent], unsettled: report[:unsettled],
        callbacks_running: report[:callbacks_running] }
    end

    def closed?
      @handle.nil?
    end

    # {state: :connected, connects:, failed_attempts:, consecutive_failures:,
    #  queues:, protocol_errors:, consume_connects:, consume_failed_attempts:}
    def stats
      s = Native::ConnectionStats.new
      s[:size] = Native::ConnectionStats.size
      Errors.check(Native.amqp_connection_get_stats(live_handle, s.pointer), "amqp_connection_get_stats")
      h = {}
      s.members.each { |m| h[m] = s[m] unless m == :size }
      h[:state] = Native::CONNECTION_STATES.fetch(h[:state], h[:state])
      h
    end

    def add_consumer(consumer) # :nodoc:
      @mutex.synchronize { @consumers << consumer }
    end

    def remove_consumer(consumer) # :nodoc:
      @mutex.synchronize { @consumers.delete(consumer) }
    end

    def live_handle
      @handle || raise(InvalidHandleError.new(Native::ERR_INVALID_HANDLE, "connection closed"))
    end
  end
end
