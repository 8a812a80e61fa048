# frozen_string_literal: true

# ruby bench.rb URI QUEUE N SIZE: publishes N messages of SIZE bytes to QUEUE
# (waiting until all are confirmed), then consumes them all with ack through
# the pull-mode consumer (batches of 256, amqp_settle_many), and prints
#   BENCH ruby publish <msg/s> consume <msg/s>
$LOAD_PATH.unshift File.expand_path("lib", __dir__)
require "resilient_amqp"

abort "usage: ruby bench.rb URI QUEUE N SIZE" unless ARGV.size == 4
uri, queue, n, size = ARGV[0], ARGV[1], Integer(ARGV[2]), Integer(ARGV[3])
now = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }

ResilientAmqp.connect(uri) do |conn|
  raise "not connected after 10 s" unless conn.wait_connected(10_000)

  q = conn.queue(queue, options: { durable: false, prefetch: 500 })
  body = ("x" * size).b
  t0 = now.call
  n.times do
    q.publish(body)
  rescue ResilientAmqp::BufferFullError
    sleep 0.0005 # confirms make room
    retry
  end
  sleep 0.0005 until q.stats[:confirmed] >= n || now.call - t0 > 300
  raise "not confirmed in 300 s" if q.stats[:confirmed] < n

  pub = n / (now.call - t0)

  count = 0
  bad = 0
  t_last = nil
  t1 = now.call
  consumer = q.consume(batch: 256) do |d|
    bad += 1 if d.body.bytesize != size
    count += 1
    t_last = now.call if count == n
  end
  sleep 0.001 until t_last || now.call - t1 > 300
  raise "consumed #{count} of #{n} in 300 s" unless t_last
  raise "#{bad} bodies of the wrong size" unless bad.zero?

  con = n / (t_last - t1)
  consumer.cancel
  sleep 0.001 until q.stats[:acked] >= n || now.call - t1 > 310
  unsent = conn.close(10_000)
  raise "#{unsent} unsent at close" unless unsent.zero?

  puts format("BENCH ruby publish %.0f consume %.0f", pub, con)
end
