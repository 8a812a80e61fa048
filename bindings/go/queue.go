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
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// QueueOptions for Conn.Queue (zero values: the library's defaults).
type QueueOptions struct {
	// Exchange to declare and bind the queue to ("": the default exchange).
	Exchange string
	// RoutingKey of the binding (and of publishes).
	RoutingKey string
	// Prefetch: unacknowledged deliveries at most (library default 100).
	Prefetch int
	// Options: any other amqp_queue_open option, e.g. "durable": "false",
	// "queue_type": "quorum", "publish_timeout_ms": "5000",
	// "arg.x-queue-mode": "str:lazy" (see the library README).
	Options map[string]string
	// PanicDisposition: what a consume handler that panics does to its
	// delivery: Requeue (the default) or Reject. Never Ack.
	PanicDisposition Disposition
}

// Queue is a queue opened on a connection (its own channel). Methods may be
// called from any goroutine. It is invalid after its connection's Close.
type Queue struct {
	h    C.amqp_queue_handle
	conn *Conn
	name string

	panicDisposition Disposition
	panics           atomic.Uint64
	consuming        atomic.Bool

	rmu         sync.Mutex
	reporting   bool
	reportsDone chan struct{} // closed when reportLoop ended
	nextTag     uint64
	pending     map[uint64]chan Report
}

// Queue opens (declares) the queue `name` on its own channel; while
// connected it waits for the broker's answer (a refusal is a CodeBroker
// *Error with the broker's text). name "" is a server-named queue (see Name).
func (c *Conn) Queue(name string, opts QueueOptions) (*Queue, error) {
	kv := map[string]string{}
	for k, v := range opts.Options {
		kv[k] = v
	}
	if opts.Prefetch > 0 {
		kv["prefetch"] = strconv.Itoa(opts.Prefetch)
	}
	o, err := encodeOptions(kv)
	if err != nil {
		return nil, err
	}
	pd := opts.PanicDisposition
	switch pd {
	case 0:
		pd = Requeue
	case Requeue, Reject:
	default:
		return nil, invalid("PanicDisposition must be Requeue or Reject")
	}
	cname, cex, ckey, copts := C.CString(name), C.CString(opts.Exchange), C.CString(opts.RoutingKey), C.CString(o)
	defer C.free(unsafe.Pointer(cname))
	defer C.free(unsafe.Pointer(cex))
	defer C.free(unsafe.Pointer(ckey))
	defer C.free(unsafe.Pointer(copts))
	var h C.amqp_queue_handle
	if err := check(C.ra_queue_open(c.h, cname, cex, ckey, copts, &h)); err != nil {
		return nil, err
	}
	q := &Queue{h: h, conn: c, name: name, panicDisposition: pd}
	c.mu.Lock()
	c.queues = append(c.queues, q)
	c.mu.Unlock()
	return q, nil
}

// Name is the queue's name at the broker: for a server-named queue the one
// the broker gave (a new one after every reconnect; "" until declared).
func (q *Queue) Name() (string, error) {
	var buf [256]C.char
	var n C.size_t
	if err := check(C.ra_queue_name(q.h, &buf[0], C.size_t(len(buf)), &n)); err != nil {
		return "", err
	}
	return C.GoString(&buf[0]), nil
}

// Publish copies body into the queue's buffer and returns at once; the
// library sends it, resends it after reconnects and keeps it until the
// broker confirmed it. CodeBufferFull when the buffer is at its bound
// (nothing stored); see PublishWait.
func (q *Queue) Publish(body []byte) error {
	return check(C.ra_publish(q.h, bytesPtr(body), C.size_t(len(body))))
}

// PublishString publishes the bytes of s.
func (q *Queue) PublishString(s string) error {
	return q.Publish([]byte(s))
}

// PublishWait is Publish that waits up to timeout while the buffer is full
// (CodeBufferFull if still full then; CodeClosed as soon as a close began).
func (q *Queue) PublishWait(body []byte, timeout time.Duration) error {
	return check(C.ra_publish_wait(q.h, bytesPtr(body), C.size_t(len(body)), C.uint32_t(timeout.Milliseconds())))
}

// PublishMessage publishes body with properties, headers and an optional
// routing key of its own (see Message).
func (q *Queue) PublishMessage(body []byte, m Message) error {
	return q.publishMessage(body, &m, 0)
}

func (q *Queue) publishMessage(body []byte, m *Message, tag uint64) error {
	a := &arena{}
	defer a.free()
	cm, err := m.toC(a)
	if err != nil {
		return err
	}
	cm.tag = C.uint64_t(tag)
	return check(C.ra_publish_message(q.h, bytesPtr(body), C.size_t(len(body)), cm))
}

// ReportStatus is how a published message ended.
type ReportStatus int

// Report statuses.
const (
	Confirmed  ReportStatus = C.AMQP_REPORT_CONFIRMED
	Nacked     ReportStatus = C.AMQP_REPORT_NACKED
	Refused    ReportStatus = C.AMQP_REPORT_REFUSED
	TooLarge   ReportStatus = C.AMQP_REPORT_TOO_LARGE
	Expired    ReportStatus = C.AMQP_REPORT_EXPIRED
	Unsent     ReportStatus = C.AMQP_REPORT_UNSENT
	Unroutable ReportStatus = C.AMQP_REPORT_UNROUTABLE
)

func (s ReportStatus) String() string {
	switch s {
	case Confirmed:
		return "CONFIRMED"
	case Nacked:
		return "NACKED"
	case Refused:
		return "REFUSED"
	case TooLarge:
		return "TOO_LARGE"
	case Expired:
		return "EXPIRED"
	case Unsent:
		return "UNSENT"
	case Unroutable:
		return "UNROUTABLE"
	}
	return "STATUS_" + strconv.Itoa(int(s))
}

// Report is the end of one message published with PublishAsync.
type Report struct {
	Status    ReportStatus
	Attempts  uint32 // times sent to the broker
	ReplyCode uint32 // the broker's code for Refused and TooLarge
	Reason    string // why it failed ("" when confirmed)
}

// Err is nil for a confirmed message, else a *PublishError.
func (r Report) Err() error {
	if r.Status == Confirmed {
		return nil
	}
	return &PublishError{Report: r}
}

// PublishError is a message that failed for good (or was unsent at close).
type PublishError struct{ Report Report }

func (e *PublishError) Error() string {
	if e.Report.ReplyCode != 0 {
		return fmt.Sprintf("resilient-amqp: publish %s (%d): %s", e.Report.Status, e.Report.ReplyCode, e.Report.Reason)
	}
	return fmt.Sprintf("resilient-amqp: publish %s: %s", e.Report.Status, e.Report.Reason)
}

// startReports switches the queue's delivery reports to pull mode and
// starts the goroutine that takes them (once; q.rmu held).
func (q *Queue) startReports() error {
	if q.reporting {
		return nil
	}
	if err := check(C.ra_reports_pull(q.h)); err != nil {
		return err
	}
	q.reporting = true
	q.pending = map[uint64]chan Report{}
	q.reportsDone = make(chan struct{})
	go q.reportLoop()
	return nil
}

// reportLoop takes the queue's reports in batches of up to 256 (one cgo
// call each) and hands each to its PublishAsync channel, until the
// connection closes.
func (q *Queue) reportLoop() {
	defer close(q.reportsDone)
	runtime.LockOSThread() // the blocking poll keeps a thread anyway
	defer runtime.UnlockOSThread()
	out := (**C.amqp_delivery_report)(C.calloc(batchMax, C.size_t(unsafe.Sizeof(uintptr(0)))))
	count := (*C.size_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.size_t(0)))))
	defer C.free(unsafe.Pointer(out))
	defer C.free(unsafe.Pointer(count))
	outs := unsafe.Slice(out, batchMax)
	reps := make([]Report, 0, batchMax)
	tags := make([]uint64, 0, batchMax)
	for {
		r := C.ra_poll_reports(q.h, out, batchMax, pollTimeoutMs, count)
		if r.r == C.AMQP_ERR_TIMEOUT {
			continue
		}
		if err := check(r); err != nil {
			if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrInvalidHandle) {
				logLine(LogError, fmt.Sprintf("queue %q: polling delivery reports: %v", q.name, err))
			}
			return
		}
		n := int(*count)
		reps, tags = reps[:0], tags[:0]
		for _, cr := range outs[:n] {
			rep := Report{Status: ReportStatus(cr.status), Attempts: uint32(cr.attempts), ReplyCode: uint32(cr.reply_code)}
			if cr.reason != nil {
				rep.Reason = C.GoString(cr.reason)
			}
			reps = append(reps, rep)
			tags = append(tags, uint64(cr.tag))
		}
		C.amqp_reports_free(out, C.size_t(n))
		q.rmu.Lock()
		for i, tag := range tags {
			if ch := q.pending[tag]; ch != nil {
				delete(q.pending, tag)
				ch <- reps[i] // room for one: never blocks
			}
		}
		q.rmu.Unlock()
	}
}

// waitReported waits until every PublishAsync of the queue got its report,
// or until the deadline.
func (q *Queue) waitReported(deadline time.Time) {
	for time.Now().Before(deadline) {
		q.rmu.Lock()
		n := len(q.pending)
		q.rmu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// PublishAsync publishes body (with m's properties if m is not nil) and
// returns a channel that receives the message's one Report: when the broker
// confirmed it, or it failed for good, or (Unsent) the connection closed
// first. The channel has room for the report, so it may be ignored.
func (q *Queue) PublishAsync(body []byte, m *Message) (<-chan Report, error) {
	q.rmu.Lock()
	if err := q.startReports(); err != nil {
		q.rmu.Unlock()
		return nil, err
	}
	q.nextTag++
	tag := q.nextTag
	ch := make(chan Report, 1)
	q.pending[tag] = ch
	q.rmu.Unlock()
	var err error
	if m == nil {
		err = check(C.ra_publish_tagged(q.h, bytesPtr(body), C.size_t(len(body)), C.uint64_t(tag)))
	} else {
		err = q.publishMessage(body, m, tag)
	}
	if err != nil {
		q.rmu.Lock()
		delete(q.pending, tag)
		q.rmu.Unlock()
		return nil, err
	}
	return ch, nil
}

// PublishConfirmed publishes body and waits until the broker confirmed it
// (nil), it failed for good (*PublishError), or ctx ended (ctx.Err(); the
// message stays buffered and is still sent).
func (q *Queue) PublishConfirmed(ctx context.Context, body []byte) error {
	return q.waitReport(ctx, body, nil)
}

// PublishMessageConfirmed is PublishConfirmed with properties.
func (q *Queue) PublishMessageConfirmed(ctx context.Context, body []byte, m Message) error {
	return q.waitReport(ctx, body, &m)
}

func (q *Queue) waitReport(ctx context.Context, body []byte, m *Message) error {
	ch, err := q.PublishAsync(body, m)
	if err != nil {
		return err
	}
	select {
	case r := <-ch:
		return r.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// endClose settles what the close left: reports never given are Unsent.
func (q *Queue) endClose() {
	q.rmu.Lock()
	done := q.reportsDone
	q.rmu.Unlock()
	if done != nil {
		// The loop may be handing out a batch it took before the close
		// returned; the freed handle ends its next poll at once.
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
	q.rmu.Lock()
	pending := q.pending
	q.pending = map[uint64]chan Report{}
	q.rmu.Unlock()
	for _, ch := range pending {
		ch <- Report{Status: Unsent, Reason: "not confirmed when the connection closed"}
	}
}

// QueueStats is a snapshot of a queue's buffer and counters (see the
// library README, Stats), plus the binding's HandlerPanics.
type QueueStats struct {
	Buffered, BufferedBytes, InFlight, Published, Confirmed, Resent, Nacked uint64
	Delivered, Acked, Rejected, Requeued, Released, Unsettled               uint64
	InvalidDispositions, ReturnsIgnored, Failed, Expired, Refused           uint64
	QueueFailed, ConsumeRefusals, Unroutable, Deduplicated                  uint64
	// The queue's on-disk spool (queue option spool_dir; library ABI 5).
	Spooled, SpoolRestored, SpoolDroppedBytes uint64
	// Consume handlers that panicked (their deliveries requeued or rejected).
	HandlerPanics uint64
}

// Stats returns a snapshot of the queue's counters.
func (q *Queue) Stats() (QueueStats, error) {
	var s C.amqp_queue_stats
	if err := check(C.ra_queue_stats(q.h, &s)); err != nil {
		return QueueStats{}, err
	}
	return QueueStats{
		Buffered: uint64(s.buffered), BufferedBytes: uint64(s.buffered_bytes),
		InFlight: uint64(s.in_flight), Published: uint64(s.published),
		Confirmed: uint64(s.confirmed), Resent: uint64(s.resent), Nacked: uint64(s.nacked),
		Delivered: uint64(s.delivered), Acked: uint64(s.acked), Rejected: uint64(s.rejected),
		Requeued: uint64(s.requeued), Released: uint64(s.released), Unsettled: uint64(s.unsettled),
		InvalidDispositions: uint64(s.invalid_dispositions), ReturnsIgnored: uint64(s.returns_ignored),
		Failed: uint64(s.failed), Expired: uint64(s.expired), Refused: uint64(s.refused),
		QueueFailed: uint64(s.queue_failed), ConsumeRefusals: uint64(s.consume_refusals),
		Unroutable:   uint64(s.unroutable),
		Deduplicated: uint64(s.deduplicated),
		Spooled:      uint64(s.spooled), SpoolRestored: uint64(s.spool_restored),
		SpoolDroppedBytes: uint64(s.spool_dropped_bytes),
		HandlerPanics:     q.panics.Load(),
	}, nil
}
