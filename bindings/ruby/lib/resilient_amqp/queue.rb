# frozen_string_literal: true

module ResilientAmqp
  # A queue of a Connection (one channel). Invalid once its connection closed.
  class Queue
    attr_reader :handle, :connection

    PROPERTY_KEYS = %i[content_type content_encoding correlation_id reply_to expiration message_id
                       type user_id app_id timestamp priority delivery_mode persistent headers
                       routing_key tag].freeze

    def initialize(connection, handle)
      @connection = connection
      @handle = handle
      @handler_errors = 0
      @errors_mutex = Mutex.new
      @confirmations = nil
    end

    def confirmations # :nodoc:
      @errors_mutex.synchronize { @confirmations ||= Confirmations.new(@handle) }
    end

    # Copies `body` (a String: binary or text, sent as its bytes) into the
    # queue's buffer and returns at once; never waits for the network.
    # With properties it uses amqp_publish_message:
    #   publish(body, content_type: "application/json", correlation_id: "c-1",
    #           message_id:, reply_to:, expiration: "60000", type:, user_id:, app_id:,
    #           timestamp: Time, priority: 0..255, persistent: true|false (or delivery_mode: 1|2),
    #           headers: {"k" => value, ...}, routing_key: "own key", tag: Integer)
    # Raises BufferFullError (nothing stored) when the buffer is full.
    def publish(body, **props)
      body = body.to_s
      if props.empty?
        Errors.check(Native.amqp_publish(@handle, body, body.bytesize), "amqp_publish")
      else
        keep = []
        m = build_message(props, keep)
        Errors.check(Native.amqp_publish_message(@handle, body, body.bytesize, m.pointer), "amqp_publish_message")
      end
      nil
    end

    # Publishes (as #publish, properties included) and waits until the broker
    # confirmed the message: returns the number of times it was sent; raises
    # PublishError when it failed for good (nacked, refused, too large,
    # unroutable, or unsent when the connection closed first) and
    # TimeoutError after timeout_ms without an end (the message stays
    # buffered and is still sent). Reports come through the library's pull
    # mode on a Ruby thread of this queue (GVL released while it waits), so
    # no Ruby code runs on a library thread; once used, every publish of the
    # queue is reported (plain ones are ignored).
    def publish_confirmed(body, timeout_ms: 60_000, **props)
      waiter = confirmations.expect
      begin
        publish(body, **props, tag: waiter.tag)
      rescue StandardError
        confirmations.forget(waiter)
        raise
      end
      waiter.wait(timeout_ms)
    end

    # As #publish without properties, but waits (GVL released) up to
    # timeout_ms while the buffer is full.
    def publish_wait(body, timeout_ms: 60_000)
      body = body.to_s
      buf = FFI::MemoryPointer.new(:char, ERRCAP)
      Errors.check_e(Native.amqp_publish_wait_e(@handle, body, body.bytesize, timeout_ms, buf, ERRCAP), buf,
                     "amqp_publish_wait")
      nil
    end

    # Starts consuming through the library's pull mode: `threads` Ruby
    # threads each wait in amqp_poll (GVL released) for batches of up to
    # `batch` deliveries, yield each to the block in order, and settle the
    # batch with amqp_settle_many. No Ruby code runs on a library thread.
    # The block's normal end acks; Delivery#reject! / #requeue! choose
    # otherwise; a block that raises never acks: the delivery is requeued
    # (on_error: :reject rejects it), the error counted (#handler_errors)
    # and logged at WARN. Returns a Consumer (#cancel, #join).
    def consume(threads: 1, batch: 256, poll_timeout_ms: 200, on_error: :requeue, &block)
      raise ArgumentError, "consume needs a block" unless block
      raise ArgumentError, "on_error must be :requeue or :reject" unless %i[requeue reject].include?(on_error)

      Consumer.new(self, threads: threads, batch: batch, poll_timeout_ms: poll_timeout_ms,
                         on_error: on_error, &block).tap(&:start)
    end

    # Pauses all consumers of the queue (prefetched deliveries go back to the
    # broker); consumer threads keep waiting until #start. GVL released.
    def stop(timeout_ms = 30_000)
      buf = FFI::MemoryPointer.new(:char, ERRCAP)
      Errors.check_e(Native.amqp_consume_stop_timeout_e(@handle, timeout_ms, buf, ERRCAP), buf, "amqp_consume_stop")
    end

    def start
      Errors.check(Native.amqp_consume_start(@handle), "amqp_consume_start")
    end

    # Every amqp_queue_stats counter, plus :handler_errors (blocks that raised).
    def stats
      s = Native::QueueStats.new
      s[:size] = Native::QueueStats.size
      Errors.check(Native.amqp_queue_get_stats(@handle, s.pointer), "amqp_queue_get_stats")
      h = {}
      Native::QUEUE_STATS_FIELDS.each { |f| h[f] = s[f] }
      h[:handler_errors] = handler_errors
      h
    end

    def handler_errors
      @errors_mutex.synchronize { @handler_errors }
    end

    def count_handler_error # :nodoc:
      @errors_mutex.synchronize { @handler_errors += 1 }
    end

    # The queue's name at the broker (for a server-named queue, the current one).
    def name
      len = FFI::MemoryPointer.new(:size_t)
      Errors.check(Native.amqp_queue_name(@handle, nil, 0, len), "amqp_queue_name")
      cap = len.read(:size_t) + 1
      buf = FFI::MemoryPointer.new(:char, cap)
      Errors.check(Native.amqp_queue_name(@handle, buf, cap, len), "amqp_queue_name")
      buf.read_string.force_encoding(Encoding::UTF_8)
    end

    private

    STRING_FIELDS = { content_type: :content_type, content_encoding: :content_encoding,
                      correlation_id: :correlation_id, reply_to: :reply_to, expiration: :expiration,
                      message_id: :message_id, type: :message_type, user_id: :user_id, app_id: :app_id,
                      routing_key: :routing_key }.freeze

    def build_message(props, keep)
      unknown = props.keys - PROPERTY_KEYS
      raise ArgumentError, "unknown message properties: #{unknown.join(', ')}" unless unknown.empty?

      m = Native::Message.new
      m[:size] = Native::Message.size
      present = 0
      STRING_FIELDS.each do |key, field|
        next if props[key].nil?

        s = FFI::MemoryPointer.from_string(props[key].to_s)
        keep << s
        m[field] = s
      end
      if props.key?(:timestamp)
        m[:timestamp] = props[:timestamp].to_i
        present |= Native::PROP[:timestamp]
      end
      if props.key?(:priority)
        m[:priority] = props[:priority]
        present |= Native::PROP[:priority]
      end
      m[:delivery_mode] = props[:delivery_mode] if props[:delivery_mode]
      m[:delivery_mode] = props[:persistent] ? 2 : 1 if props.key?(:persistent)
      m[:tag] = props[:tag] if props[:tag]
      if (h = props[:headers])
        m[:headers] = Headers.encode_table(h, keep)
        m[:header_count] = h.size
      end
      m[:present] = present
      keep << m
      m
    end
  end
end
