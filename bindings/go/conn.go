package resilientamqp

/*
#include <stdlib.h>
#include "ra_helpers.h"
*/
import "C"

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Options of a connection (zero values: the library's defaults).
type Options struct {
	ReconnectDelay    time.Duration // reconnect_delay_ms (100 ms)
	ReconnectDelayMax time.Duration // reconnect_delay_max_ms (5 s)
	MaxReconnects     int           // max_reconnects (0: never give up)
	MaxBuffered       int           // max_buffered per queue (100,000)
	MaxBufferedBytes  int64         // max_buffered_bytes per queue (64 MiB)
	MaxMessageBytes   int64         // max_message_bytes (128 MiB)
	// Extra options, key=value, for ones not named above.
	Extra map[string]string
}

func (o *Options) encode() (string, error) {
	if o == nil {
		return "", nil
	}
	kv := map[string]string{}
	if o.ReconnectDelay > 0 {
		kv["reconnect_delay_ms"] = strconv.FormatInt(o.ReconnectDelay.Milliseconds(), 10)
	}
	if o.ReconnectDelayMax > 0 {
		kv["reconnect_delay_max_ms"] = strconv.FormatInt(o.ReconnectDelayMax.Milliseconds(), 10)
	}
	if o.MaxReconnects > 0 {
		kv["max_reconnects"] = strconv.Itoa(o.MaxReconnects)
	}
	if o.MaxBuffered > 0 {
		kv["max_buffered"] = strconv.Itoa(o.MaxBuffered)
	}
	if o.MaxBufferedBytes > 0 {
		kv["max_buffered_bytes"] = strconv.FormatInt(o.MaxBufferedBytes, 10)
	}
	if o.MaxMessageBytes > 0 {
		kv["max_message_bytes"] = strconv.FormatInt(o.MaxMessageBytes, 10)
	}
	for k, v := range o.Extra {
		kv[k] = v
	}
	return encodeOptions(kv)
}

// encodeOptions joins key=value pairs with '&' (sorted, so the text is stable).
func encodeOptions(kv map[string]string) (string, error) {
	keys := make([]string, 0, len(kv))
	for k, v := range kv {
		if strings.ContainsAny(k, "&=") || strings.Contains(v, "&") {
			return "", invalid("option %q: '&' (and '=' in a key) cannot be passed", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+kv[k])
	}
	return strings.Join(parts, "&"), nil
}

// Conn is a connection: it connects and reconnects in the background and
// keeps every queue's unconfirmed messages until the broker confirmed them.
// All methods may be called from any goroutine.
type Conn struct {
	h C.amqp_connection_handle

	mu     sync.Mutex
	queues []*Queue
	closed bool
}

// Connect starts a connection to uri (amqp://user:pass@host:port/vhost) and
// returns at once: a broker that is down is not an error (see WaitConnected).
// opts may be nil.
func Connect(uri string, opts *Options) (*Conn, error) {
	ensureLogging()
	o, err := opts.encode()
	if err != nil {
		return nil, err
	}
	curi := C.CString(uri)
	defer C.free(unsafe.Pointer(curi))
	copts := C.CString(o)
	defer C.free(unsafe.Pointer(copts))
	var h C.amqp_connection_handle
	if err := check(C.ra_connect(curi, copts, &h)); err != nil {
		return nil, err
	}
	return &Conn{h: h}, nil
}

// WaitConnected waits until the connection is up, until ctx ends (without
// a deadline: at most 30 s). CodeTimeout when it did not connect by the
// deadline, ctx.Err() when ctx was cancelled, CodeClosed once it gave up for
// good (the message says why, e.g. the broker's 403 ACCESS_REFUSED).
func (c *Conn) WaitConnected(ctx context.Context) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	for {
		// Slices of at most 100 ms, so that a cancelled ctx ends the wait.
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		if left > 100*time.Millisecond {
			left = 100 * time.Millisecond
		}
		err := check(C.ra_wait_connected(c.h, C.uint32_t(left.Milliseconds())))
		if err == nil || !errors.Is(err, ErrTimeout) || !time.Now().Before(deadline) {
			return err
		}
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return ctx.Err()
		}
	}
}

// CloseReport says what a Close left undone at its deadline.
type CloseReport struct {
	Unsent           uint64 // publishes not confirmed by the broker
	Unsettled        uint64 // polled deliveries not settled
	CallbacksRunning uint64
}

// Close stops publishing and consuming, waits up to timeout for every
// buffered message to be confirmed (and polled deliveries to be settled),
// then closes and frees the connection and its queues. It returns the number
// of messages not confirmed; err is a CodeTimeout *Error when not all of it
// happened in time. Pending PublishAsync channels get an Unsent report. A
// second Close returns CodeInvalidHandle.
func (c *Conn) Close(timeout time.Duration) (unsent uint64, err error) {
	rep, err := c.CloseEx(timeout)
	return rep.Unsent, err
}

// CloseEx is Close with the whole report.
func (c *Conn) CloseEx(timeout time.Duration) (CloseReport, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return CloseReport{}, &Error{Code: CodeInvalidHandle, Message: "the connection is closed already"}
	}
	c.closed = true
	queues := append([]*Queue(nil), c.queues...)
	c.mu.Unlock()
	// Reports are polled by the binding: let the ones the broker is about to
	// confirm arrive before the close frees the queue handles (a report not
	// taken by then could never be taken). The library's own wait follows
	// with the time left.
	deadline := time.Now().Add(timeout)
	for _, q := range queues {
		q.waitReported(deadline)
	}
	left := time.Until(deadline)
	if left < 0 {
		left = 0
	}
	var rep C.amqp_close_report
	err := check(C.ra_close(c.h, C.uint32_t(left.Milliseconds()), &rep))
	out := CloseReport{Unsent: uint64(rep.unsent), Unsettled: uint64(rep.unsettled),
		CallbacksRunning: uint64(rep.callbacks_running)}
	for _, q := range queues {
		q.endClose()
	}
	return out, err
}

// ConnState is the state of a connection.
type ConnState int

// Connection states.
const (
	StateConnecting   ConnState = C.AMQP_STATE_CONNECTING
	StateConnected    ConnState = C.AMQP_STATE_CONNECTED
	StateReconnecting ConnState = C.AMQP_STATE_RECONNECTING
	StateFailed       ConnState = C.AMQP_STATE_FAILED
	StateClosed       ConnState = C.AMQP_STATE_CLOSED
)

func (s ConnState) String() string {
	return C.GoString(C.amqp_connection_state_str(C.amqp_connection_state(s)))
}

// ConnStats is a snapshot of a connection's state and counters.
type ConnStats struct {
	State                 ConnState
	Connects              uint64
	FailedAttempts        uint64
	ConsecutiveFailures   uint64
	Queues                uint64
	ProtocolErrors        uint64
	ConsumeConnects       uint64
	ConsumeFailedAttempts uint64
}

// Stats returns a snapshot of the connection's state and counters.
func (c *Conn) Stats() (ConnStats, error) {
	var s C.amqp_connection_stats
	if err := check(C.ra_conn_stats(c.h, &s)); err != nil {
		return ConnStats{}, err
	}
	return ConnStats{
		State:                 ConnState(s.state),
		Connects:              uint64(s.connects),
		FailedAttempts:        uint64(s.failed_attempts),
		ConsecutiveFailures:   uint64(s.consecutive_failures),
		Queues:                uint64(s.queues),
		ProtocolErrors:        uint64(s.protocol_errors),
		ConsumeConnects:       uint64(s.consume_connects),
		ConsumeFailedAttempts: uint64(s.consume_failed_attempts),
	}, nil
}
