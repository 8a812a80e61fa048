package resilientamqp

import (
	"context"
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
