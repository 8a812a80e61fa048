// Command bench measures the Go binding: bench URI QUEUE N SIZE publishes N
// messages of SIZE bytes to QUEUE (not durable, prefetch 500), waits until
// the broker confirmed all of them, then consumes them all with ack (pull
// mode, batches of up to 256, settled in batches) and prints
//
//	BENCH go publish <msg/s> consume <msg/s>
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	resilientamqp "github.com/resilient-amqp/resilient-amqp/bindings/go"
)

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
	os.Exit(1)
}

// cpu is the process's user+system CPU time so far.
func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	if len(os.Args) != 5 {
		fail("usage: bench URI QUEUE N SIZE")
	}
	uri, queue := os.Args[1], os.Args[2]
	n, err1 := strconv.Atoi(os.Args[3])
	size, err2 := strconv.Atoi(os.Args[4])
	if err1 != nil || err2 != nil || n <= 0 || size < 0 {
		fail("N and SIZE must be numbers")
	}
	conn, err := resilientamqp.Connect(uri, nil)
	if err != nil {
		fail("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := conn.WaitConnected(ctx); err != nil {
		fail("%v", err)
	}
	q, err := conn.Queue(queue, resilientamqp.QueueOptions{Prefetch: 500,
		Options: map[string]string{"durable": "false", "persistent": "false"}})
	if err != nil {
		fail("%v", err)
	}

	body := make([]byte, size)
	start, cpu0 := time.Now(), cpu()
	for i := 0; i < n; i++ {
		if err := q.PublishWait(body, 60*time.Second); err != nil {
			fail("publish %d: %v", i, err)
		}
	}
	for {
		s, err := q.Stats()
		if err != nil {
			fail("%v", err)
		}
		if s.Confirmed+s.Failed >= uint64(n) {
			if s.Failed != 0 {
				fail("%d messages failed", s.Failed)
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
	pubRate := float64(n) / time.Since(start).Seconds()
	pubCPU := float64((cpu() - cpu0).Microseconds()) / float64(n)

	cctx, ccancel := context.WithTimeout(context.Background(), 300*time.Second)
	defer ccancel()
	var got atomic.Int64
	start, cpu0 = time.Now(), cpu()
	err = q.Consume(cctx, func(ctx context.Context, d resilientamqp.Delivery) resilientamqp.Disposition {
		if got.Add(1) == int64(n) {
			ccancel()
		}
		return resilientamqp.Ack
	}, 1)
	elapsed := time.Since(start)
	conCPU := float64((cpu() - cpu0).Microseconds()) / float64(n)
	if got.Load() < int64(n) {
		fail("consumed %d of %d: %v", got.Load(), n, err)
	}
	conRate := float64(n) / elapsed.Seconds()
	if unsent, err := conn.Close(30 * time.Second); err != nil || unsent != 0 {
		fail("close: unsent %d, %v", unsent, err)
	}
	// CPU per message (the whole process: library threads included) to
	// stderr: steadier than rates on a busy machine.
	fmt.Fprintf(os.Stderr, "bench: cpu us/msg publish %.2f consume %.2f\n", pubCPU, conCPU)
	fmt.Printf("BENCH go publish %.0f consume %.0f\n", pubRate, conRate)
}
