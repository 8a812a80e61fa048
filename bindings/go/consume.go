package resilientamqp

/*
#include <stdlib.h>
#include "ra_helpers.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// Disposition is what a consume handler decided for a delivery.
type Disposition int

// Dispositions.
const (
	Ack     Disposition = C.AMQP_ACK     // done: basic.ack
	Reject  Disposition = C.AMQP_REJECT  // failed: reject, not requeued (dead-letters if configured)
	Requeue Disposition = C.AMQP_REQUEUE // try again later: reject, requeued
	Defer   Disposition = C.AMQP_DEFER   // settled later with Delivery.Ack/Reject/Requeue
)

func (d Disposition) String() string {
	switch d {
	case Ack:
		return "Ack"
	case Reject:
		return "Reject"
	case Requeue:
		return "Requeue"
	case Defer:
		return "Defer"
	}
	return fmt.Sprintf("Disposition(%d)", int(d))
}

// Delivery is one consumed message. Body and the other fields are Go
// copies, valid for as long as the application keeps them.
type Delivery struct {
	Body        []byte
	ID          uint64 // the library's delivery id (for settling)
	DeliveryTag uint64 // the broker's tag on its channel
	Redelivered bool
	Exchange    string
	RoutingKey  string
	Message     Message // properties and headers
	q           *Queue
}

// Ack settles the delivery as done (after a handler returned Defer, or for
// a delivery from Deliveries). CodeStaleDelivery: its channel is gone, the
// broker redelivers it; CodeAlreadySettled: settled before.
func (d Delivery) Ack() error { return d.Settle(Ack) }

// Reject settles it as failed (not requeued).
func (d Delivery) Reject() error { return d.Settle(Reject) }

// Requeue gives it back to the broker for another try.
func (d Delivery) Requeue() error { return d.Settle(Requeue) }

// Nack is Requeue (requeue true) or Reject.
func (d Delivery) Nack(requeue bool) error {
	if requeue {
		return d.Requeue()
	}
	return d.Reject()
}

// Settle applies disp (Ack, Reject or Requeue). Never blocks.
func (d Delivery) Settle(disp Disposition) error {
	if d.q == nil {
		return invalid("not a delivery of this binding")
	}
	return check(C.ra_settle(d.q.h, C.uint64_t(d.ID), C.int(disp)))
}

// Handler handles one delivery and says what becomes of it. A handler that
// panics never acks: the panic is recovered, logged at ERROR, counted
// (QueueStats.HandlerPanics) and the delivery requeued (or rejected, see
// QueueOptions.PanicDisposition). A return value that is no Disposition is
// applied as Requeue (logged at WARN).
type Handler func(ctx context.Context, d Delivery) Disposition

// batchMax: deliveries taken by one poll.
const batchMax = 256

// pollTimeoutMs bounds one blocking poll (a cancelled ctx wakes it at once).
const pollTimeoutMs = 1000

// poller reads the queue's pull consumer in batches; C memory for the
// output array so the library never writes into Go memory.
type poller struct {
	q     *Queue
	out   **C.amqp_delivery
	count *C.size_t
	outs  []*C.amqp_delivery
	buf   []Delivery
	done  chan struct{}
}

func (q *Queue) startPull(ctx context.Context) (*poller, error) {
	if !q.consuming.CompareAndSwap(false, true) {
		return nil, invalid("a Consume or Deliveries already runs on this queue")
	}
	if err := check(C.ra_consume_pull(q.h)); err != nil {
		q.consuming.Store(false)
		return nil, err
	}
	p := &poller{q: q, done: make(chan struct{})}
	p.out = (**C.amqp_delivery)(C.calloc(batchMax, C.size_t(unsafe.Sizeof(uintptr(0)))))
	p.count = (*C.size_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.size_t(0)))))
	p.outs = unsafe.Slice(p.out, batchMax)
	p.buf = make([]Delivery, 0, batchMax)
	// A cancelled ctx ends a blocking poll at once.
	go func() {
		select {
		case <-ctx.Done():
			C.amqp_poll_wake(q.h)
		case <-p.done:
		}
	}()
	return p, nil
}

// finish cancels the pull consumer alone (amqp_consume_pull_cancel: its
// prefetched deliveries go back to the broker, the queue's other consumers
// go on; a later Consume starts a new one) and frees the poller.
func (p *poller) finish() {
	close(p.done)
	q := p.q
	_ = check(C.ra_consume_pull_cancel(q.h, 0))
	C.free(unsafe.Pointer(p.out))
	C.free(unsafe.Pointer(p.count))
	q.consuming.Store(false)
}

// poll takes up to batchMax deliveries (nil, nil on a timeout), copied into
// Go memory; the C deliveries are freed before it returns.
func (p *poller) poll(timeoutMs uint32) ([]Delivery, error) {
	r := C.ra_poll(p.q.h, p.out, batchMax, C.uint32_t(timeoutMs), p.count)
	if r.r == C.AMQP_ERR_TIMEOUT {
		return nil, nil
	}
	if err := check(r); err != nil {
		return nil, err
	}
	n := int(*p.count)
	ds := p.buf[:0]
	for _, d := range p.outs[:n] {
		ds = append(ds, Delivery{
			Body:        C.GoBytes(unsafe.Pointer(d.body), C.int(d.body_len)),
			ID:          uint64(d.delivery_id),
			DeliveryTag: uint64(d.delivery_tag),
			Redelivered: bool(d.redelivered),
			Exchange:    C.GoStringN(d.exchange, C.int(d.exchange_len)),
			RoutingKey:  C.GoStringN(d.routing_key, C.int(d.routing_key_len)),
			Message:     messageFromC(d.message),
			q:           p.q,
		})
	}
	C.ra_free_many(p.out, C.size_t(n))
	return ds, nil
}

// settleMany settles ids with one disposition; stale and already-settled
// ones are fine (the broker redelivers / nothing to do).
func (q *Queue) settleMany(ids []uint64, disp Disposition) {
	if len(ids) == 0 {
		return
	}
	err := check(C.ra_settle_many(q.h, (*C.uint64_t)(unsafe.Pointer(&ids[0])), C.size_t(len(ids)), C.int(disp)))
	if err != nil && !errors.Is(err, ErrStaleDelivery) && !errors.Is(err, ErrAlreadySettled) &&
		!errors.Is(err, ErrClosed) && !errors.Is(err, ErrInvalidHandle) {
		logLine(LogWarn, fmt.Sprintf("queue %q: settling %d deliveries as %s: %v", q.name, len(ids), disp, err))
	}
}

// run calls h, turning a panic into the queue's panic disposition.
func (q *Queue) run(ctx context.Context, h Handler, d Delivery) (disp Disposition) {
	returned := false
	defer func() {
		if r := recover(); r == nil && !returned {
			// runtime.Goexit (or panic(nil) before Go 1.21): the caller
			// settles the delivery with the panic disposition.
			disp = q.panicDisposition
			q.panics.Add(1)
			logLine(LogError, fmt.Sprintf("queue %q: consume handler called runtime.Goexit on delivery %d (%s)",
				q.name, d.ID, q.panicDisposition))
		} else if r != nil {
			q.panics.Add(1)
			disp = q.panicDisposition
			logLine(LogError, fmt.Sprintf("queue %q: consume handler panicked on delivery %d: %v (%s)",
				q.name, d.ID, r, disp))
		}
	}()
	disp = h(ctx, d)
	returned = true
	switch disp {
	case Ack, Reject, Requeue, Defer:
	default:
		logLine(LogWarn, fmt.Sprintf("queue %q: consume handler returned %v: requeued", q.name, disp))
		disp = Requeue
	}
	return disp
}

// Consume runs h for every delivery of the queue until ctx ends (then it
// returns ctx.Err()) or the connection closes (an *Error, CodeClosed or
// CodeInvalidHandle). Up to `workers` handlers run at once (0 or 1: one at
// a time, in order). Deliveries are taken in batches of up to 256 by the
// library's pull mode and settled in batches; the handlers run on Go
// goroutines, never on library threads. When it returns, the queue's
// consumer is paused (prefetched deliveries go back to the broker) until the
// next Consume or Deliveries. One Consume or Deliveries per queue at a time.
func (q *Queue) Consume(ctx context.Context, h Handler, workers int) error {
	p, err := q.startPull(ctx)
	if err != nil {
		return err
	}
	defer p.finish()
	// The blocking poll keeps this thread; do not let the runtime move the
	// goroutine between its cgo calls.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	b := &batchState{q: q, disps: make([]Disposition, batchMax)}
	// A handler that calls runtime.Goexit (t.FailNow, ...) ends this
	// goroutine: the batch is still settled, the unfinished ones with the
	// panic disposition.
	defer b.settle()
	var jobs chan int
	var wg sync.WaitGroup
	if workers > 1 {
		jobs = make(chan int, batchMax)
		defer close(jobs)
		var worker func()
		worker = func() {
			goexit := true
			defer func() {
				if goexit { // a handler called runtime.Goexit: replace this worker
					go worker()
				}
			}()
			for i := range jobs {
				func() {
					defer wg.Done()
					b.disps[i] = q.run(ctx, h, b.ds[i])
				}()
			}
			goexit = false
		}
		for w := 0; w < workers; w++ {
			go worker()
		}
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ds, err := p.poll(pollTimeoutMs)
		if err != nil {
			return err
		}
		if len(ds) == 0 {
			continue
		}
		b.ds = ds
		for i := range ds {
			b.disps[i] = q.panicDisposition
		}
		if jobs == nil {
			for i := range ds {
				b.disps[i] = q.run(ctx, h, ds[i])
			}
		} else {
			wg.Add(len(ds))
			for i := range ds {
				jobs <- i
			}
			wg.Wait()
		}
		b.settle()
	}
}

// batchState is one polled batch and what its handlers decided.
type batchState struct {
	q                       *Queue
	ds                      []Delivery
	disps                   []Disposition
	acks, rejects, requeues []uint64
}

// settle settles the batch (once), one amqp_settle_many per disposition.
func (b *batchState) settle() {
	if len(b.ds) == 0 {
		return
	}
	b.acks, b.rejects, b.requeues = b.acks[:0], b.rejects[:0], b.requeues[:0]
	for i := range b.ds {
		switch b.disps[i] {
		case Ack:
			b.acks = append(b.acks, b.ds[i].ID)
		case Reject:
			b.rejects = append(b.rejects, b.ds[i].ID)
		case Requeue:
			b.requeues = append(b.requeues, b.ds[i].ID)
		}
	}
	b.ds = nil
	b.q.settleMany(b.acks, Ack)
	b.q.settleMany(b.rejects, Reject)
	b.q.settleMany(b.requeues, Requeue)
}

// Deliveries returns a channel of the queue's deliveries, each to be settled
// with Ack, Reject or Requeue (from any goroutine). The channel closes when
// ctx ends or the connection closes; a delivery not yet taken from the
// channel then goes back to the broker. One Consume or Deliveries per queue
// at a time.
func (q *Queue) Deliveries(ctx context.Context) (<-chan Delivery, error) {
	p, err := q.startPull(ctx)
	if err != nil {
		return nil, err
	}
	ch := make(chan Delivery)
	go func() {
		defer close(ch)
		defer p.finish()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var rest []uint64
		for ctx.Err() == nil {
			ds, err := p.poll(pollTimeoutMs)
			if err != nil {
				return
			}
			for i, d := range ds {
				select {
				case ch <- d:
				case <-ctx.Done():
					rest = rest[:0]
					for _, r := range ds[i:] {
						rest = append(rest, r.ID)
					}
					q.settleMany(rest, Requeue)
					return
				}
			}
		}
	}()
	return ch, nil
}

// Stop pauses the queue's consumers, waiting up to timeout for running
// handlers' batches; prefetched deliveries not yet handed out go back to the
// broker. Start resumes them.
func (q *Queue) Stop(timeout time.Duration) error {
	return check(C.ra_stop(q.h, C.uint32_t(timeout.Milliseconds())))
}

// Start resumes the queue's consumers after Stop.
func (q *Queue) Start() error {
	return check(C.ra_consume_start(q.h))
}
