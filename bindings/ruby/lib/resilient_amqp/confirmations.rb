# frozen_string_literal: true

module ResilientAmqp
  # The pending Queue#publish_confirmed calls of one queue, and the Ruby
  # thread that takes the library's pull-mode delivery reports for them
  # (amqp_poll_reports declared blocking: the GVL is released while it
  # waits). The thread ends when the connection closes; what is still
  # pending then was not confirmed (:unsent).
  class Confirmations # :nodoc:
    BATCH = 256

    # One publish waiting for its report.
    class Waiter
      attr_reader :tag

      def initialize(tag)
        @tag = tag
        @mutex = Mutex.new
        @cv = ConditionVariable.new
        @result = nil
      end

      def finish(result)
        @mutex.synchronize do
          @result ||= result
          @cv.broadcast
        end
      end

      def wait(timeout_ms)
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout_ms / 1000.0
        @mutex.synchronize do
          while @result.nil?
            left = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
            raise TimeoutError.new(Native::ERR_TIMEOUT, "no confirm within #{timeout_ms} ms") if left <= 0

            @cv.wait(@mutex, left)
          end
        end
        status, attempts, code, reason = @result
        raise PublishError.new(status, code, reason) unless status == :confirmed

        attempts
      end
    end

    def initialize(handle)
      @handle = handle
      @mutex = Mutex.new
      @pending = {}
      @next_tag = 1
      Errors.check(Native.amqp_reports_pull(handle, nil), "amqp_reports_pull")
      @thread = Thread.new { run }
      @thread.name = "resilient_amqp reports" if @thread.respond_to?(:name=)
    end

    def expect
      @mutex.synchronize do
        raise ClosedError.new(Native::ERR_CLOSED, "the connection is closed") if @ended

        w = Waiter.new(@next_tag)
        @next_tag += 1
        @pending[w.tag] = w
      end
    end

    def forget(waiter)
      @mutex.synchronize { @pending.delete(waiter.tag) }
    end

    private

    def run
      out = FFI::MemoryPointer.new(:pointer, BATCH)
      count = FFI::MemoryPointer.new(:size_t)
      loop do
        rc = Native.amqp_poll_reports(@handle, out, BATCH, 200, count)
        break unless [Native::OK, Native::ERR_TIMEOUT].include?(rc) # closed: the handle is gone

        n = count.read(:size_t)
        next if n.zero?

        out.get_array_of_pointer(0, n).each { |p| deliver(Native::Report.new(p)) }
        Native.amqp_reports_free(out, n)
      end
    ensure
      end_all
    end

    def deliver(r)
      w = @mutex.synchronize { @pending.delete(r[:tag]) }
      return if w.nil? # a plain publish on this queue

      reason = r[:reason].null? ? "" : r[:reason].read_string
      w.finish([Native::REPORT_STATUS[r[:status]] || :unknown, r[:attempts], r[:reply_code], reason])
    end

    def end_all
      left = @mutex.synchronize do
        @ended = true
        @pending.values.tap { @pending.clear }
      end
      left.each { |w| w.finish([:unsent, 0, 0, "not confirmed when the connection closed"]) }
    end
  end
end
