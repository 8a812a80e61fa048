# frozen_string_literal: true

require "ffi"

module ResilientAmqp
  # The C ABI (include/resilient_amqp.h) through ruby-ffi. Every function that
  # can wait is attached with `blocking: true`, so the GVL is released while it
  # waits and other Ruby threads run.
  module Native
    extend FFI::Library

    def self.library_path
      dir = ENV["RESILIENT_AMQP_LIB_DIR"]
      if dir && !dir.empty?
        File.join(dir, "libresilient_amqp.so")
      else
        repo = File.expand_path("../../../..", __dir__)
        built = File.join(repo, "target", "release", "libresilient_amqp.so")
        File.exist?(built) ? built : "resilient_amqp"
      end
    end

    ffi_lib library_path

    OK = 0
    ERR_INVALID_ARGUMENT = 1
    ERR_INVALID_HANDLE = 2
    ERR_BUFFER_FULL = 3
    ERR_MESSAGE_TOO_LARGE = 4
    ERR_CLOSED = 5
    ERR_TIMEOUT = 6
    ERR_NOT_CONNECTED = 7
    ERR_BROKER = 8
    ERR_INTERNAL = 9
    ERR_STALE_DELIVERY = 10
    ERR_ALREADY_SETTLED = 11

    ACK = 23_041
    REJECT = 23_042
    REQUEUE = 23_043
    DEFER = 23_044

    VALUE_VOID = 0
    VALUE_BOOL = 1
    VALUE_INT = 2
    VALUE_DOUBLE = 3
    VALUE_STRING = 4
    VALUE_BYTES = 5
    VALUE_TIMESTAMP = 6
    VALUE_TABLE = 7
    VALUE_ARRAY = 8
    VALUE_INT8 = 9
    VALUE_UINT32 = 14
    VALUE_FLOAT = 15
    VALUE_DECIMAL = 16

    PROP = {
      content_type: 0x8000, content_encoding: 0x4000, headers: 0x2000, delivery_mode: 0x1000,
      priority: 0x0800, correlation_id: 0x0400, reply_to: 0x0200, expiration: 0x0100,
      message_id: 0x0080, timestamp: 0x0040, type: 0x0020, user_id: 0x0010, app_id: 0x0008,
      cluster_id: 0x0004
    }.freeze

    class Value < FFI::Struct
      layout :kind, :uint32, :integer, :int64, :number, :double, :bytes, :pointer, :len, :size_t
    end

    class Field < FFI::Struct
      layout :key, :pointer, :value, Value
    end

    class Message < FFI::Struct
      layout :size, :size_t,
             :routing_key, :pointer,
             :content_type, :pointer,
             :content_encoding, :pointer,
             :headers, :pointer,
             :header_count, :size_t,
             :delivery_mode, :uint8,
             :priority, :uint8,
             :present, :uint16,
             :correlation_id, :pointer,
             :reply_to, :pointer,
             :expiration, :pointer,
             :message_id, :pointer,
             :timestamp, :uint64,
             :message_type, :pointer,
             :user_id, :pointer,
             :app_id, :pointer,
             :tag, :uint64
    end

    class Delivery < FFI::Struct
      layout :body, :pointer,
             :body_len, :size_t,
             :delivery_tag, :uint64,
             :redelivered, :bool,
             :exchange, :pointer,
             :exchange_len, :size_t,
             :routing_key, :pointer,
             :routing_key_len, :size_t,
             :queue, :uint64,
             :delivery_id, :uint64,
             :message, :pointer,
             :properties, :pointer,
             :properties_len, :size_t
    end

    QUEUE_STATS_FIELDS = %i[
      buffered buffered_bytes in_flight published confirmed resent nacked delivered acked
      rejected requeued released unsettled invalid_dispositions returns_ignored failed expired
      refused queue_failed consume_refusals unroutable deduplicated spooled spool_restored
      spool_dropped_bytes
    ].freeze

    class QueueStats < FFI::Struct
      layout(*([:size, :size_t] + QUEUE_STATS_FIELDS.flat_map { |f| [f, :uint64] }))
    end

    CONNECTION_STATES = %i[connecting connected reconnecting failed closed].freeze

    class ConnectionStats < FFI::Struct
      layout :size, :size_t,
             :state, :int,
             :connects, :uint64,
             :failed_attempts, :uint64,
             :consecutive_failures, :uint64,
             :queues, :uint64,
             :protocol_errors, :uint64,
             :consume_connects, :uint64,
             :consume_failed_attempts, :uint64
    end

    class CloseReport < FFI::Struct
      layout :size, :size_t, :unsent, :uint64, :unsettled, :uint64, :callbacks_running, :uint64
    end

    # amqp_delivery_report (a report taken by amqp_poll_reports).
    class Report < FFI::Struct
      layout :size, :size_t, :tag, :uint64, :status, :int, :attempts, :uint32, :reply_code, :uint32,
             :reason, :pointer
    end

    REPORT_STATUS = %i[confirmed nacked refused too_large expired unsent unroutable].freeze

    callback :log_fn, %i[int string pointer], :void

    attach_function :amqp_abi_version, [], :uint32
    attach_function :amqp_result_str, [:int], :string
    attach_function :amqp_last_error, %i[pointer size_t], :size_t
    attach_function :amqp_connect, %i[string string pointer], :int
    attach_function :amqp_wait_connected_e, %i[uint64 uint32 pointer size_t], :int, blocking: true
    attach_function :amqp_close_ex_e, %i[uint64 uint32 pointer pointer size_t], :int, blocking: true
    attach_function :amqp_connection_get_stats, %i[uint64 pointer], :int
    attach_function :amqp_queue_open_e, %i[uint64 string string string string pointer pointer size_t], :int,
                    blocking: true
    attach_function :amqp_queue_get_stats, %i[uint64 pointer], :int
    attach_function :amqp_queue_name, %i[uint64 pointer size_t pointer], :int
    attach_function :amqp_publish, %i[uint64 buffer_in size_t], :int
    attach_function :amqp_publish_message, %i[uint64 buffer_in size_t pointer], :int
    attach_function :amqp_publish_wait_e, %i[uint64 buffer_in size_t uint32 pointer size_t], :int, blocking: true
    attach_function :amqp_consume_pull, %i[uint64 pointer], :int, blocking: true
    attach_function :amqp_consume_pull_cancel, %i[uint64 uint32], :int, blocking: true
    attach_function :amqp_poll_e, %i[uint64 pointer size_t uint32 pointer pointer size_t], :int, blocking: true
    attach_function :amqp_poll_wake, [:uint64], :int
    attach_function :amqp_settle, %i[uint64 uint64 int], :int
    attach_function :amqp_settle_many, %i[uint64 pointer size_t int pointer], :int
    attach_function :amqp_delivery_free, [:pointer], :void
    attach_function :amqp_delivery_free_many, %i[pointer size_t], :void
    attach_function :amqp_consume_stop_timeout_e, %i[uint64 uint32 pointer size_t], :int, blocking: true
    attach_function :amqp_consume_start, [:uint64], :int
    attach_function :amqp_set_log_callback, %i[log_fn int pointer], :int
    attach_function :amqp_publish_tagged, %i[uint64 buffer_in size_t uint64], :int
    attach_function :amqp_reports_pull, %i[uint64 pointer], :int
    attach_function :amqp_poll_reports, %i[uint64 pointer size_t uint32 pointer], :int, blocking: true
    attach_function :amqp_reports_free, %i[pointer size_t], :void
  end
end
