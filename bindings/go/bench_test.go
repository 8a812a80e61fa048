package resilientamqp

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// go test -run '^$' -bench . (with the environment of test.sh): publish
// calls, and publishes whose reports come back on channels.

func BenchmarkPublish(b *testing.B) {
	c, err := Connect(testURI, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(30 * time.Second)
	q, err := c.Queue("go-bench-publish", QueueOptions{Options: tmpQueue})
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := q.PublishWait(body, 30*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPublishAsync(b *testing.B) {
	c, err := Connect(testURI, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		b.Fatal(err)
	}
	q, err := c.Queue("go-bench-async", QueueOptions{Options: tmpQueue})
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 64)
	chans := make([]<-chan Report, 0, 1024)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ch, err := q.PublishAsync(body, nil)
		if err != nil {
			b.Fatal(err)
		}
		chans = append(chans, ch)
		if len(chans) == cap(chans) {
			for _, ch := range chans {
				if r := <-ch; r.Status != Confirmed {
					b.Fatal(r)
				}
			}
			chans = chans[:0]
		}
	}
	for _, ch := range chans {
		if r := <-ch; r.Status != Confirmed {
			b.Fatal(r)
		}
	}
}

// Consuming 20,000 pre-published messages with ack: pull mode (Consume:
// batches of 256, one cgo call each) against one cgo callback per message
// from the library's consumer thread.
func benchConsume(b *testing.B, pull bool) {
	const n = 20000
	c, err := Connect(testURI, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(30 * time.Second)
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		q, err := c.Queue(fmt.Sprint("go-bench-consume-", time.Now().UnixNano()),
			QueueOptions{Prefetch: 500, Options: tmpQueue})
		if err != nil {
			b.Fatal(err)
		}
		for k := 0; k < n; k++ {
			if err := q.PublishWait(make([]byte, 64), 30*time.Second); err != nil {
				b.Fatal(err)
			}
		}
		for s, _ := q.Stats(); s.Confirmed < n; s, _ = q.Stats() {
			time.Sleep(time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var got atomic.Int64
		h := func(ctx context.Context, d Delivery) Disposition {
			if got.Add(1) == n {
				cancel()
			}
			return Ack
		}
		b.StartTimer()
		start := time.Now()
		if pull {
			_ = q.Consume(ctx, h, 1)
		} else {
			stop, err := q.consumeCallback(ctx, h, 1)
			if err != nil {
				b.Fatal(err)
			}
			<-ctx.Done()
			elapsed += time.Since(start)
			b.StopTimer()
			stop()
		}
		if pull {
			elapsed += time.Since(start)
		}
		b.StopTimer()
		cancel()
		if got.Load() < n {
			b.Fatalf("consumed %d of %d", got.Load(), n)
		}
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "msg/s")
}

func BenchmarkConsumePull(b *testing.B)     { benchConsume(b, true) }
func BenchmarkConsumeCallback(b *testing.B) { benchConsume(b, false) }
