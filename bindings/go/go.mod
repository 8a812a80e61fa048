module github.com/resilient-amqp/resilient-amqp/bindings/go

go 1.19
