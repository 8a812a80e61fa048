package resilientamqp_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	ra "github.com/resilient-amqp/resilient-amqp/bindings/go"
)

// Publishing: Publish returns at once (the library keeps the message until
// the broker confirmed it, across reconnects); PublishConfirmed waits for
// the confirm.
func Example() {
	conn, err := ra.Connect("amqp://guest:guest@127.0.0.1:5672/%2f", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		unsent, err := conn.Close(5 * time.Second)
		if err != nil {
			log.Printf("close: %d messages not confirmed: %v", unsent, err)
		}
	}()
	q, err := conn.Queue("orders", ra.QueueOptions{Exchange: "shop", RoutingKey: "order.created"})
	if err != nil {
		log.Fatal(err)
	}
	if err := q.Publish([]byte(`{"id": 1}`)); errors.Is(err, ra.ErrBufferFull) {
		log.Print("buffer full: slow down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = q.PublishMessageConfirmed(ctx, []byte(`{"id": 2}`), ra.Message{
		ContentType: "application/json", CorrelationID: "req-2",
		Headers: map[string]any{"tenant": "acme", "attempt": 1},
	})
	var pe *ra.PublishError
	if errors.As(err, &pe) {
		log.Printf("refused for good: %s %d %s", pe.Report.Status, pe.Report.ReplyCode, pe.Report.Reason)
	}
}

// Consuming with a handler: 4 at once; a handler that panics requeues.
func ExampleQueue_Consume() {
	conn, _ := ra.Connect("amqp://guest:guest@127.0.0.1:5672/%2f", nil)
	defer conn.Close(5 * time.Second)
	q, _ := conn.Queue("orders", ra.QueueOptions{Prefetch: 100})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := q.Consume(ctx, func(ctx context.Context, d ra.Delivery) ra.Disposition {
		fmt.Printf("%s (%s)\n", d.Body, d.Message.ContentType)
		return ra.Ack
	}, 4)
	log.Print(err)
}

// Consuming from a channel, settling elsewhere.
func ExampleQueue_Deliveries() {
	conn, _ := ra.Connect("amqp://guest:guest@127.0.0.1:5672/%2f", nil)
	defer conn.Close(5 * time.Second)
	q, _ := conn.Queue("orders", ra.QueueOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch, err := q.Deliveries(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for d := range ch {
		go func(d ra.Delivery) {
			if len(d.Body) == 0 {
				_ = d.Reject()
				return
			}
			_ = d.Ack()
		}(d)
	}
}
