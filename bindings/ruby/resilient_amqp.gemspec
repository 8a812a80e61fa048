# frozen_string_literal: true

require_relative "lib/resilient_amqp/version"

Gem::Specification.new do |s|
  s.name = "resilient_amqp"
  s.version = ResilientAmqp::VERSION
  s.summary = "RabbitMQ publishing and consuming that loses nothing across broker outages (resilient-amqp's C ABI through FFI)"
  s.description = "Ruby binding of libresilient_amqp.so: buffered, confirmed publishing that survives " \
                  "reconnects, pull-mode consuming with batched acks, errors as exceptions."
  s.authors = ["resilient-amqp contributors"]
  s.license = "MIT OR Apache-2.0"
  s.files = Dir["lib/**/*.rb"] + ["README.md", "bench.rb"]
  s.require_paths = ["lib"]
  s.required_ruby_version = ">= 2.7"
  s.add_runtime_dependency "ffi", ">= 1.15", "< 2"
  s.add_development_dependency "minitest", ">= 5.0"
  s.metadata["rubygems_mfa_required"] = "true"
end
