# frozen_string_literal: true

module ResilientAmqp
  VERSION = "0.1.0"
end
