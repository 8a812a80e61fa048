# frozen_string_literal: true

require "bigdecimal"

module ResilientAmqp
  # Ruby values <-> amqp_field / amqp_value tables.
  #   String (binary encoding -> bytes, else UTF-8 string), Symbol -> string,
  #   Integer -> signed 64-bit, true/false, Float -> double, Time -> timestamp,
  #   Hash -> nested table, Array -> array, nil -> void.
  module Headers
    module_function

    # Fills `value` (a Native::Value) from `obj`; `keep` holds the memory that
    # must live until the publish call returned.
    def encode_value(value, obj, keep)
      case obj
      when nil
        value[:kind] = Native::VALUE_VOID
      when true, false
        value[:kind] = Native::VALUE_BOOL
        value[:integer] = obj ? 1 : 0
      when Integer
        raise ArgumentError, "header integer out of 64-bit range: #{obj}" unless obj.bit_length < 64

        value[:kind] = Native::VALUE_INT
        value[:integer] = obj
      when Float
        value[:kind] = Native::VALUE_DOUBLE
        value[:number] = obj
      when Time
        value[:kind] = Native::VALUE_TIMESTAMP
        value[:integer] = obj.to_i
      when String, Symbol
        s = obj.to_s
        value[:kind] = s.encoding == Encoding::BINARY ? Native::VALUE_BYTES : Native::VALUE_STRING
        s = s.encode(Encoding::UTF_8) unless value[:kind] == Native::VALUE_BYTES || s.encoding == Encoding::UTF_8
        mem = FFI::MemoryPointer.new(:uint8, [s.bytesize, 1].max)
        mem.put_bytes(0, s)
        keep << mem
        value[:bytes] = mem
        value[:len] = s.bytesize
      when Hash
        fields = encode_table(obj, keep)
        value[:kind] = Native::VALUE_TABLE
        value[:bytes] = fields
        value[:len] = obj.size
      when Array
        mem = FFI::MemoryPointer.new(Native::Value, [obj.size, 1].max)
        keep << mem
        obj.each_with_index { |o, i| encode_value(Native::Value.new(mem + i * Native::Value.size), o, keep) }
        value[:kind] = Native::VALUE_ARRAY
        value[:bytes] = mem
        value[:len] = obj.size
      else
        raise ArgumentError, "unsupported header value #{obj.class}"
      end
    end

    # An amqp_field array for `hash` (its pointer).
    def encode_table(hash, keep)
      mem = FFI::MemoryPointer.new(Native::Field, [hash.size, 1].max)
      keep << mem
      hash.each_with_index do |(k, v), i|
        f = Native::Field.new(mem + i * Native::Field.size)
        key = FFI::MemoryPointer.from_string(k.to_s)
        keep << key
        f[:key] = key
        encode_value(f[:value], v, keep)
      end
      mem
    end

    def decode_value(v)
      kind = v[:kind]
      case kind
      when Native::VALUE_VOID then nil
      when Native::VALUE_BOOL then v[:integer] != 0
      when Native::VALUE_INT, Native::VALUE_INT8..Native::VALUE_UINT32 then v[:integer]
      when Native::VALUE_DOUBLE, Native::VALUE_FLOAT then v[:number]
      when Native::VALUE_STRING then bytes(v).force_encoding(Encoding::UTF_8)
      when Native::VALUE_BYTES then bytes(v)
      when Native::VALUE_TIMESTAMP then Time.at(v[:integer] & 0xffff_ffff_ffff_ffff)
      when Native::VALUE_TABLE then decode_table(v[:bytes], v[:len])
      when Native::VALUE_ARRAY
        (0...v[:len]).map { |i| decode_value(Native::Value.new(v[:bytes] + i * Native::Value.size)) }
      when Native::VALUE_DECIMAL
        BigDecimal(v[:integer] & 0xffff_ffff) / (BigDecimal(10)**v[:len])
      end
    end

    def decode_table(ptr, count)
      return {} if ptr.null? || count.zero?

      h = {}
      count.times do |i|
        f = Native::Field.new(ptr + i * Native::Field.size)
        h[f[:key].read_string.force_encoding(Encoding::UTF_8)] = decode_value(f[:value])
      end
      h
    end

    def bytes(v)
      v[:len].zero? ? String.new(encoding: Encoding::BINARY) : v[:bytes].read_bytes(v[:len])
    end
  end
end
