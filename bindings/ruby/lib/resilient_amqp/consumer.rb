# frozen_string_literal: true

module ResilientAmqp
  # Pull-mode consumer threads of one queue (see Queue#consume).
  class Consumer
    attr_reader :queue

    @all = []
    @all_mutex = Mutex.new
    class << self
      def register(c)
        @all_mutex.synchronize { @all << c }
      end

      def unregister(c)
        @all_mutex.synchronize { @all.delete(c) }
      end

      # At exit: end every poll at once, so exiting never waits for one.
      def wake_all
        @all_mutex.synchronize { @all.dup }.each(&:wake)
      end
    end

    def initialize(queue, threads:, batch:, poll_timeout_ms:, on_error:, &block)
      @queue = queue
      @nthreads = [threads.to_i, 1].max
      @batch = batch.to_i.clamp(1, 65_536)
      @timeout = poll_timeout_ms.to_i
      @on_error = on_error == :reject ? Native::REJECT : Native::REQUEUE
      @block = block
      @stopping = false
      @threads = []
    end

    def start # :nodoc:
      Errors.check(Native.amqp_consume_pull(@queue.handle, nil), "amqp_consume_pull")
      @queue.connection.add_consumer(self)
      Consumer.register(self)
      @threads = Array.new(@nthreads) do |i|
        Thread.new do
          Thread.current.name = "resilient_amqp-consumer-#{i}"
          run
        end
      end
      self
    end

    # Stops polling: the threads finish their current batch (settled) and
    # end; then the queue's pull consumer is cancelled
    # (amqp_consume_pull_cancel), so deliveries the library prefetched go
    # back to the broker at once. `timeout` seconds to wait for the threads
    # (nil: forever).
    def cancel(timeout = nil)
      @stopping = true
      wake
      join(timeout)
      Native.amqp_consume_pull_cancel(@queue.handle, 0) unless running?
      self
    end

    def join(timeout = nil)
      @threads.each { |t| t.join(timeout) unless t == Thread.current }
      Consumer.unregister(self)
      @queue.connection.remove_consumer(self)
      self
    end

    def join_after_close(timeout_ms) # :nodoc:
      @stopping = true
      @threads.each { |t| t.join(timeout_ms / 1000.0 + 1) unless t == Thread.current }
      Consumer.unregister(self)
    end

    def running?
      @threads.any?(&:alive?)
    end

    def wake # :nodoc:
      Native.amqp_poll_wake(@queue.handle)
    rescue StandardError
      nil
    end

    private

    def run
      h = @queue.handle
      out = FFI::MemoryPointer.new(:pointer, @batch)
      count = FFI::MemoryPointer.new(:size_t)
      errbuf = FFI::MemoryPointer.new(:char, ERRCAP)
      ids = { Native::ACK => FFI::MemoryPointer.new(:uint64, @batch),
              Native::REJECT => FFI::MemoryPointer.new(:uint64, @batch),
              Native::REQUEUE => FFI::MemoryPointer.new(:uint64, @batch) }
      until @stopping
        rc = Native.amqp_poll_e(h, out, @batch, @timeout, count, errbuf, ERRCAP)
        case rc
        when Native::OK
          handle_batch(h, out, out.get_array_of_pointer(0, count.read(:size_t)), ids)
        when Native::ERR_TIMEOUT
          next
        when Native::ERR_CLOSED, Native::ERR_INVALID_HANDLE
          break
        else
          Logging.warn("amqp_poll: #{Native.amqp_result_str(rc)}: #{errbuf.read_string}")
          sleep 0.1
        end
      end
    rescue Exception => e # rubocop:disable Lint/RescueException
      Logging.warn("consumer thread ended: #{e.class}: #{e.message}") unless e.is_a?(SystemExit)
      raise
    end

    # Yields each delivery; settles the batch (one amqp_settle_many per
    # disposition) and frees it, also when the thread is killed or the block
    # raises an exception that ends the thread (the rest is requeued).
    def handle_batch(h, out, ptrs, ids)
      groups = { Native::ACK => [], Native::REJECT => [], Native::REQUEUE => [] }
      done = 0
      begin
        ptrs.each do |p|
          d = Delivery.new(p, @queue)
          groups[dispatch(d)] << d.delivery_id
          done += 1
        end
      ensure
        # whatever was not handled (an exception that ends the thread): requeue
        ptrs[done..].each { |p| groups[Native::REQUEUE] << p.get_uint64(Delivery::OFF[:delivery_id]) }
        groups.each do |disp, list|
          next if list.empty?

          mem = ids[disp]
          mem.put_array_of_uint64(0, list)
          Native.amqp_settle_many(h, mem, list.size, disp, nil) # stale after a reconnect: redelivered anyway
        end
        Native.amqp_delivery_free_many(out, ptrs.size) # the batch in one call
      end
    end

    def dispatch(d)
      @block.call(d)
      case d.disposition
      when nil, :ack then Native::ACK
      when :reject then Native::REJECT
      when :requeue then Native::REQUEUE
      else raise ArgumentError, "unknown disposition #{d.disposition.inspect}"
      end
    rescue SystemExit, SignalException
      raise # the thread ends; the ensure of handle_batch requeues this one
    rescue Exception => e # rubocop:disable Lint/RescueException -- never ack after a raise
      @queue.count_handler_error
      Logging.warn("consumer block raised #{e.class}: #{e.message}; delivery #{d.delivery_id} " \
                   "#{@on_error == Native::REJECT ? 'rejected' : 'requeued'}")
      @on_error
    end
  end
end
