# frozen_string_literal: true

module ResilientAmqp
  # One delivery, copied out of the library (valid after the block too).
  # The block's normal end acks it; #reject! or #requeue! inside the block
  # choose otherwise; a block that raises never acks (requeue, or the
  # consumer's on_error).
  class Delivery
    attr_reader :body, :routing_key, :exchange, :delivery_id, :delivery_tag, :queue
    attr_accessor :disposition

    OFF = {
      body: Native::Delivery.offset_of(:body), body_len: Native::Delivery.offset_of(:body_len),
      delivery_tag: Native::Delivery.offset_of(:delivery_tag),
      redelivered: Native::Delivery.offset_of(:redelivered),
      exchange: Native::Delivery.offset_of(:exchange), exchange_len: Native::Delivery.offset_of(:exchange_len),
      routing_key: Native::Delivery.offset_of(:routing_key),
      routing_key_len: Native::Delivery.offset_of(:routing_key_len),
      delivery_id: Native::Delivery.offset_of(:delivery_id), message: Native::Delivery.offset_of(:message),
      present: Native::Message.offset_of(:present), delivery_mode: Native::Message.offset_of(:delivery_mode)
    }.freeze
    DELIVERY_MODE_BIT = Native::PROP[:delivery_mode]
    EMPTY = "".b.freeze

    # Reads the native delivery at `ptr` (an FFI::Pointer) with a few direct
    # reads (the hot path of consuming); properties only when it has some.
    # The fields up to `message` in one read (LP64 layout, checked below).
    HEAD_BYTES = Native::Delivery.offset_of(:message) + FFI.type_size(:pointer)
    HEAD_FORMAT = "J3Cx7J7"
    unless [OFF[:body], OFF[:body_len], OFF[:delivery_tag], OFF[:redelivered], OFF[:exchange],
            OFF[:routing_key], OFF[:delivery_id], OFF[:message]] == [0, 8, 16, 24, 32, 48, 72, 80]
      raise LoadError, "resilient_amqp: unexpected amqp_delivery layout on this platform"
    end

    # Reads the native delivery at `ptr` (an FFI::Pointer): the hot path of
    # consuming, so one read of its head and one of the body; properties
    # only when it has some besides the delivery mode.
    def initialize(ptr, queue)
      @queue = queue
      body_p, len, @delivery_tag, redelivered, ex_p, ex_len, rk_p, rk_len, _q, @delivery_id, m_p =
        ptr.get_bytes(0, HEAD_BYTES).unpack(HEAD_FORMAT)
      @redelivered = redelivered != 0
      @body = len.zero? ? EMPTY.dup : FFI::Pointer.new(body_p).read_bytes(len)
      @routing_key = rk_len.zero? ? "" : FFI::Pointer.new(rk_p).read_bytes(rk_len).force_encoding(Encoding::UTF_8)
      @exchange = ex_len.zero? ? "" : FFI::Pointer.new(ex_p).read_bytes(ex_len).force_encoding(Encoding::UTF_8)
      if m_p.zero?
        @properties = {}
        @headers = {}
      else
        m = FFI::Pointer.new(m_p)
        present = m.get_uint16(OFF[:present])
        if (present & ~DELIVERY_MODE_BIT).zero? # the common case: none, or only the delivery mode
          @properties = present.zero? ? {} : { delivery_mode: m.get_uint8(OFF[:delivery_mode]) }
          @headers = {}
        else
          decode_message(Native::Message.new(m))
        end
      end
      @disposition = nil
    end

    def redelivered?
      @redelivered
    end

    # Properties the message carried: :content_type, :content_encoding,
    # :correlation_id, :reply_to, :expiration, :message_id, :type, :user_id,
    # :app_id (Strings), :timestamp (Time), :priority, :delivery_mode (Integers).
    attr_reader :properties
    # The header table as a Hash (String keys).
    attr_reader :headers

    def ack!
      @disposition = :ack
    end

    def reject!
      @disposition = :reject
    end

    def requeue!
      @disposition = :requeue
    end

    private

    STRING_PROPS = {
      content_type: :content_type, content_encoding: :content_encoding, correlation_id: :correlation_id,
      reply_to: :reply_to, expiration: :expiration, message_id: :message_id, type: :message_type,
      user_id: :user_id, app_id: :app_id
    }.freeze

    def decode_message(m)
      present = m[:present]
      props = {}
      STRING_PROPS.each do |name, field|
        next if (present & Native::PROP[name]).zero?

        p = m[field]
        props[name] = p.read_string.force_encoding(Encoding::UTF_8) unless p.null?
      end
      props[:timestamp] = Time.at(m[:timestamp]) unless (present & Native::PROP[:timestamp]).zero?
      props[:priority] = m[:priority] unless (present & Native::PROP[:priority]).zero?
      props[:delivery_mode] = m[:delivery_mode] unless (present & Native::PROP[:delivery_mode]).zero?
      @properties = props
      @headers = if (present & Native::PROP[:headers]).zero?
                   {}
                 else
                   Headers.decode_table(m[:headers], m[:header_count])
                 end
    end
  end
end
