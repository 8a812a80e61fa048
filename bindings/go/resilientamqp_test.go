package resilientamqp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The broker and rabbitmqctl come from the environment (bindings/go/test.sh).
var (
	testURI = os.Getenv("RESILIENT_AMQP_TEST_URI")
	testCtl = os.Getenv("RESILIENT_AMQP_TEST_CTL")
)

// logs collects every line the binding logs during the tests.
var logs struct {
	sync.Mutex
	lines []string
}

func logged(substr string) bool {
	logs.Lock()
	defer logs.Unlock()
	for _, l := range logs.lines {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

func TestMain(m *testing.M) {
	if os.Getenv("RA_GO_EXIT_CHILD") != "" {
		exitChild()
		return
	}
	if testURI == "" {
		fmt.Fprintln(os.Stderr, "RESILIENT_AMQP_TEST_URI is not set (run bindings/go/test.sh)")
		os.Exit(2)
	}
	SetLogHandler(func(level LogLevel, msg string) {
		logs.Lock()
		logs.lines = append(logs.lines, level.String()+" "+msg)
		logs.Unlock()
	}, LogInfo)
	os.Exit(m.Run())
}

func queueName(t *testing.T) string {
	return fmt.Sprintf("go-%s-%d", t.Name(), time.Now().UnixNano())
}

// tmpQueue: not durable, deleted by the broker 10 minutes after its last use.
var tmpQueue = map[string]string{"durable": "false", "expires_ms": "600000"}

func connect(t *testing.T) *Conn {
	t.Helper()
	c, err := Connect(testURI, &Options{ReconnectDelay: 50 * time.Millisecond, ReconnectDelayMax: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func closeConn(t *testing.T, c *Conn) {
	t.Helper()
	if unsent, err := c.Close(10 * time.Second); err != nil || unsent != 0 {
		t.Errorf("close: unsent %d, %v", unsent, err)
	}
}

func openQueue(t *testing.T, c *Conn, opts QueueOptions) *Queue {
	t.Helper()
	if opts.Options == nil {
		opts.Options = tmpQueue
	}
	q, err := c.Queue(queueName(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Test 1: bytes, a string and a message with properties and headers come
// back as sent.
func TestRoundTrip(t *testing.T) {
	c := connect(t)
	defer closeConn(t, c)
	q := openQueue(t, c, QueueOptions{})
	if err := q.Publish([]byte{0, 1, 2, 255}); err != nil {
		t.Fatal(err)
	}
	if err := q.PublishString("héllo, wörld"); err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1700000000, 0)
	headers := map[string]any{
		"s": "text", "b": []byte{9, 8}, "t": true, "i": int64(-42), "i8": int8(-8), "u8": uint8(200),
		"i16": int16(-1600), "u16": uint16(60000), "i32": int32(-320000), "u32": uint32(4000000000),
		"d": 2.5, "f": float32(1.25), "ts": ts, "dec": Decimal{Scale: 2, Value: 12345}, "void": nil,
		"nested": map[string]any{"k": "v", "n": int64(1)}, "arr": []any{"a", int64(2), false},
	}
	sent := Message{ContentType: "application/json", ContentEncoding: "identity", CorrelationID: "corr-1",
		ReplyTo: "replies", MessageID: "m-1", Type: "order", AppID: "go-test", Expiration: "600000",
		Priority: 3, DeliveryMode: 1, Timestamp: ts, Headers: headers}
	if err := q.PublishMessage([]byte(`{"a":1}`), sent); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch, err := q.Deliveries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []Delivery
	for d := range ch {
		got = append(got, d)
		if err := d.Ack(); err != nil {
			t.Error(err)
		}
		if len(got) == 3 {
			cancel()
		}
	}
	if len(got) != 3 {
		t.Fatalf("got %d deliveries", len(got))
	}
	if !bytes.Equal(got[0].Body, []byte{0, 1, 2, 255}) || string(got[1].Body) != "héllo, wörld" || string(got[2].Body) != `{"a":1}` {
		t.Fatalf("bodies: %q %q %q", got[0].Body, got[1].Body, got[2].Body)
	}
	if got[0].Message.Present != 0 && got[0].Message.Headers != nil {
		t.Errorf("plain publish has properties: %+v", got[0].Message)
	}
	m := got[2].Message
	if m.ContentType != sent.ContentType || m.ContentEncoding != sent.ContentEncoding ||
		m.CorrelationID != sent.CorrelationID || m.ReplyTo != sent.ReplyTo || m.MessageID != sent.MessageID ||
		m.Type != sent.Type || m.AppID != sent.AppID || m.Expiration != sent.Expiration ||
		m.Priority != 3 || m.DeliveryMode != 1 || !m.Timestamp.Equal(ts) {
		t.Errorf("properties: sent %+v\n got %+v", sent, m)
	}
	if got[2].RoutingKey != q.name || got[2].Exchange != "" || got[2].ID == 0 {
		t.Errorf("routing: %q %q %d", got[2].Exchange, got[2].RoutingKey, got[2].ID)
	}
	for k, v := range headers {
		gv := m.Headers[k]
		if tv, ok := v.(time.Time); ok {
			if gt, ok := gv.(time.Time); !ok || !gt.Equal(tv) {
				t.Errorf("header %s: %#v, want %#v", k, gv, v)
			}
			continue
		}
		if !reflect.DeepEqual(gv, v) {
			t.Errorf("header %s: %#v, want %#v", k, gv, v)
		}
	}
	if len(m.Headers) != len(headers) {
		t.Errorf("%d headers, want %d", len(m.Headers), len(headers))
	}
	// Headers the library refuses: nothing stored, the reason named.
	for _, bad := range []map[string]any{{"k": struct{}{}}, {"k": uint64(1 << 63)}, {"": "empty key"}, {"k": "\xff"}} {
		if err := q.PublishMessage([]byte("x"), Message{Headers: bad}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("headers %v: %v", bad, err)
		}
	}
}

// PublishConfirmed resolves when the broker confirmed; an unroutable
// message fails with its report.
func TestPublishConfirmed(t *testing.T) {
	c := connect(t)
	defer closeConn(t, c)
	q := openQueue(t, c, QueueOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		if err := q.PublishConfirmed(ctx, []byte(fmt.Sprint("c", i))); err != nil {
			t.Fatal(err)
		}
	}
	err := q.PublishMessageConfirmed(ctx, []byte("lost"), Message{RoutingKey: "no-such-queue-go-test"})
	var pe *PublishError
	if !errors.As(err, &pe) || pe.Report.Status != Unroutable {
		t.Fatalf("unroutable publish: %v", err)
	}
	chans := make([]<-chan Report, 100)
	for i := range chans {
		if chans[i], err = q.PublishAsync([]byte("a"), nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range chans {
		if r := <-ch; r.Status != Confirmed || r.Attempts < 1 {
			t.Fatalf("report %+v", r)
		}
	}
	s, err := q.Stats()
	if err != nil || s.Confirmed != 120 || s.Unroutable != 1 || s.Published != 121 {
		t.Fatalf("stats %+v %v", s, err)
	}
	// Close right after publishing: every report arrives before the handles
	// are freed, none is turned into Unsent.
	c2 := connect(t)
	q2 := openQueue(t, c2, QueueOptions{})
	for i := range chans {
		if chans[i], err = q2.PublishAsync([]byte("b"), &Message{MessageID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if unsent, err := c2.Close(10 * time.Second); err != nil || unsent != 0 {
		t.Fatalf("close: unsent %d, %v", unsent, err)
	}
	for _, ch := range chans {
		if r := <-ch; r.Status != Confirmed {
			t.Fatalf("report after close %+v", r)
		}
	}
}

// Test 2: a handler that panics on every other call never acks: 0 lost,
// each panic logged and counted.
func TestPanickingHandler(t *testing.T) {
	const n = 200
	c := connect(t)
	defer closeConn(t, c)
	q := openQueue(t, c, QueueOptions{})
	for i := 0; i < n; i++ {
		if err := q.PublishString(fmt.Sprint("p", i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var calls atomic.Int64
	var mu sync.Mutex
	acked := map[string]bool{}
	err := q.Consume(ctx, func(ctx context.Context, d Delivery) Disposition {
		if calls.Add(1)%2 == 0 {
			panic("handler failure " + string(d.Body))
		}
		mu.Lock()
		acked[string(d.Body)] = true
		if len(acked) == n {
			cancel()
		}
		mu.Unlock()
		return Ack
	}, 1)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Consume: %v", err)
	}
	if len(acked) != n {
		t.Fatalf("acked %d distinct of %d", len(acked), n)
	}
	s := waitStats(t, q, func(s QueueStats) bool { return s.Acked >= n })
	if s.HandlerPanics < n/2-1 || s.Requeued < s.HandlerPanics || s.Acked < n {
		t.Fatalf("stats %+v", s)
	}
	if !logged("consume handler panicked") {
		t.Fatal("the panic was not logged")
	}
	// Concurrent workers, PanicDisposition Reject: never acked either.
	q2 := openQueue(t, c, QueueOptions{PanicDisposition: Reject})
	for i := 0; i < 10; i++ {
		_ = q2.PublishString("r")
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	var seen atomic.Int64
	_ = q2.Consume(ctx2, func(ctx context.Context, d Delivery) Disposition {
		if seen.Add(1) == 10 {
			cancel2()
		}
		panic(errors.New("always"))
	}, 4)
	s2 := waitStats(t, q2, func(s QueueStats) bool { return s.Rejected >= 10 })
	if s2.Acked != 0 || s2.Rejected != 10 || s2.HandlerPanics != 10 {
		t.Fatalf("reject stats %+v", s2)
	}
}

// A handler that calls runtime.Goexit (t.FailNow does) ends its goroutine,
// yet its delivery and the rest of the batch are settled, none acked by it.
func TestHandlerGoexit(t *testing.T) {
	const n = 20
	c := connect(t)
	defer closeConn(t, c)
	q := openQueue(t, c, QueueOptions{})
	for i := 0; i < n; i++ {
		_ = q.PublishString(fmt.Sprint("g", i))
	}
	// One at a time: the Goexit ends the goroutine that called Consume.
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		_ = q.Consume(context.Background(), func(ctx context.Context, d Delivery) Disposition {
			runtime.Goexit()
			return Ack
		}, 1)
	}()
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		t.Fatal("Consume did not end")
	}
	// Workers: a Goexit ends one worker, which is replaced.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	got := map[string]bool{}
	var calls atomic.Int64
	err := q.Consume(ctx, func(ctx context.Context, d Delivery) Disposition {
		if calls.Add(1)%3 == 0 {
			runtime.Goexit()
		}
		mu.Lock()
		defer mu.Unlock()
		got[string(d.Body)] = true
		if len(got) == n {
			cancel()
		}
		return Ack
	}, 2)
	if !errors.Is(err, context.Canceled) || len(got) != n {
		t.Fatalf("Consume: %v, %d of %d", err, len(got), n)
	}
	s := waitStats(t, q, func(s QueueStats) bool { return s.Acked >= n })
	if s.HandlerPanics < 2 || s.Acked != n || !logged("runtime.Goexit") {
		t.Fatalf("stats %+v", s)
	}
}

// A server-named queue: the broker's name, bound to an exchange.
func TestServerNamedQueue(t *testing.T) {
	c := connect(t)
	defer closeConn(t, c)
	ex := "go-test-fanout"
	q, err := c.Queue("", QueueOptions{Exchange: ex, Options: map[string]string{"exchange_type": "fanout", "durable": "false"}})
	if err != nil {
		t.Fatal(err)
	}
	name, err := q.Name()
	if err != nil || !strings.HasPrefix(name, "amq.gen-") {
		t.Fatalf("name %q, %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.PublishConfirmed(ctx, []byte("fan")); err != nil {
		t.Fatal(err)
	}
	ch, err := q.Deliveries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := <-ch
	if string(d.Body) != "fan" || d.Exchange != ex {
		t.Fatalf("delivery %q from %q", d.Body, d.Exchange)
	}
	_ = d.Ack()
	cancel()
	for range ch {
	}
}

// waitStats reads the queue's stats until ok (settles are applied
// asynchronously, within a few ms), at most 5 s.
func waitStats(t *testing.T, q *Queue, ok func(QueueStats) bool) QueueStats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := q.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if ok(s) || time.Now().After(deadline) {
			return s
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Test 3: asynchronous handling: Defer and settle later from another
// goroutine; concurrent workers; the Deliveries channel; Stop/Start.
func TestAsyncHandlers(t *testing.T) {
	const n = 500
	c := connect(t)
	defer closeConn(t, c)
	q := openQueue(t, c, QueueOptions{Prefetch: 50})
	for i := 0; i < n; i++ {
		if err := q.PublishString(fmt.Sprint("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	got := map[string]bool{}
	var running, maxRunning atomic.Int64
	err := q.Consume(ctx, func(ctx context.Context, d Delivery) Disposition {
		r := running.Add(1)
		defer running.Add(-1)
		for {
			m := maxRunning.Load()
			if r <= m || maxRunning.CompareAndSwap(m, r) {
				break
			}
		}
		time.Sleep(time.Millisecond)
		go func() { // settled later, elsewhere
			time.Sleep(2 * time.Millisecond)
			if err := d.Ack(); err != nil {
				t.Error(err)
			}
			mu.Lock()
			got[string(d.Body)] = true
			if len(got) == n {
				cancel()
			}
			mu.Unlock()
		}()
		return Defer
	}, 4)
	if !errors.Is(err, context.Canceled) || len(got) != n {
		t.Fatalf("Consume: %v, %d of %d", err, len(got), n)
	}
	if maxRunning.Load() < 2 {
		t.Errorf("workers never ran concurrently")
	}
	// Stop / Start, then the channel form.
	if err := q.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		_ = q.PublishString(fmt.Sprint("ch", i))
	}
	ctx3, cancel3 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel3()
	ch, err := q.Deliveries(ctx3)
	if err != nil {
		t.Fatal(err)
	}
	k := 0
	for d := range ch {
		go func(d Delivery) { _ = d.Ack() }(d)
		if k++; k == 10 {
			cancel3()
		}
	}
	if k != 10 {
		t.Fatalf("channel: %d of 10", k)
	}
	if _, err := q.Deliveries(context.Background()); err != nil {
		// the previous one has ended: a new one may start
		t.Fatalf("second Deliveries: %v", err)
	}
}

// Test 4: errors carry the library's code and their own text, also from 8
// goroutines failing at once.
func TestConcurrentErrors(t *testing.T) {
	c := connect(t)
	defer closeConn(t, c)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for k := 0; k < 20 && errs[i] == nil; k++ {
				_, err := c.Queue("go-bad", QueueOptions{Options: map[string]string{fmt.Sprintf("bogus_key_%d", i): "1"}})
				var e *Error
				if !errors.As(err, &e) || e.Code != CodeInvalidArgument || !errors.Is(err, ErrInvalidArgument) {
					errs[i] = fmt.Errorf("goroutine %d: %v", i, err)
				} else if !strings.Contains(e.Message, fmt.Sprintf("bogus_key_%d", i)) {
					errs[i] = fmt.Errorf("goroutine %d got another's text: %q", i, e.Message)
				}
			}
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// A broker refusal: 406 with the broker's text.
	name := queueName(t)
	if _, err := c.Queue(name, QueueOptions{Options: tmpQueue}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Queue(name, QueueOptions{Options: map[string]string{"durable": "true"}})
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeBroker || !strings.Contains(e.Message, "406") {
		t.Fatalf("redeclare: %v", err)
	}
	if _, err := Connect("http://nope", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad uri: %v", err)
	}
}

// Test 5: a process that exits without Close, with a consumer running and
// messages in flight, neither aborts nor hangs (5 times).
func TestExitWithoutClose(t *testing.T) {
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "RA_GO_EXIT_CHILD=1")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), "child: exiting") {
			t.Fatalf("run %d: %v after %v\n%s", i, err, time.Since(start), out)
		}
	}
}

func exitChild() {
	c, err := Connect(testURI, nil)
	if err != nil {
		fmt.Println("child:", err)
		os.Exit(3)
	}
	q, err := c.Queue(fmt.Sprint("go-exit-", time.Now().UnixNano()), QueueOptions{Options: tmpQueue})
	if err != nil {
		fmt.Println("child:", err)
		os.Exit(3)
	}
	go func() {
		_ = q.Consume(context.Background(), func(ctx context.Context, d Delivery) Disposition {
			time.Sleep(time.Millisecond)
			return Ack
		}, 2)
	}()
	for i := 0; i < 2000; i++ {
		_ = q.PublishString("x")
	}
	time.Sleep(300 * time.Millisecond)
	fmt.Println("child: exiting")
	os.Exit(0)
}

// Test 6: connections closed every 0.5 s while 10,000 messages are
// published and consumed: none missing.
func TestFaultCloseConnections(t *testing.T) {
	if testCtl == "" {
		t.Skip("RESILIENT_AMQP_TEST_CTL is not set")
	}
	const n = 10000
	c := connect(t)
	defer closeConn(t, c)
	q := openQueue(t, c, QueueOptions{})
	stop := make(chan struct{})
	var faults atomic.Int64
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
			}
			if err := exec.Command("sh", "-c", testCtl+" close_all_connections test >/dev/null 2>&1").Run(); err == nil {
				faults.Add(1)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var mu sync.Mutex
	got := map[string]bool{}
	var deliveries int
	done := make(chan error, 1)
	go func() {
		done <- q.Consume(ctx, func(ctx context.Context, d Delivery) Disposition {
			mu.Lock()
			deliveries++
			got[string(d.Body)] = true
			if len(got) == n {
				cancel()
			}
			mu.Unlock()
			return Ack
		}, 1)
	}()
	var reports []<-chan Report // every 10th message published with a report
	for i := 0; i < n; i++ {
		if i == n-1000 { // a slow rabbitmqctl: let at least 3 faults hit the publishing
			for k := 0; k < 300 && faults.Load() < 3; k++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
		body := []byte(fmt.Sprint("f", i))
		if i%10 == 0 {
			ch, err := q.PublishAsync(body, nil)
			if err != nil {
				t.Fatal(err)
			}
			reports = append(reports, ch)
		} else if err := q.PublishWait(body, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			time.Sleep(80 * time.Millisecond) // spread the publishing (~8 s) over the faults
		}
	}
	err := <-done
	close(stop)
	fwg.Wait()
	mu.Lock()
	defer mu.Unlock()
	cs, _ := c.Stats()
	t.Logf("%d distinct of %d, %d deliveries, %d faults, %d connects, %d consume connects",
		len(got), n, deliveries, faults.Load(), cs.Connects, cs.ConsumeConnects)
	if len(got) != n {
		t.Fatalf("missing %d (Consume: %v)", n-len(got), err)
	}
	for _, ch := range reports {
		if r := <-ch; r.Status != Confirmed {
			t.Fatalf("report %+v", r)
		}
	}
	if faults.Load() < 3 || cs.Connects < 3 || cs.ConsumeConnects < 3 {
		t.Fatalf("the fault loop did not disturb the run (%d faults, %d connects)", faults.Load(), cs.Connects)
	}
}

// Test 7: Close returns the unsent count and settles pending reports;
// stats readable; library logs reach the Go handler.
func TestCloseUnsentStatsLogs(t *testing.T) {
	c, err := Connect("amqp://guest:guest@127.0.0.1:1/%2f", &Options{ReconnectDelay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	q, err := c.Queue("go-never-declared", QueueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := q.PublishString("x"); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := q.PublishAsync([]byte("y"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := c.WaitConnected(ctx); !errors.Is(err, ErrTimeout) {
		t.Fatalf("WaitConnected: %v", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel2)
	if err := c.WaitConnected(ctx2); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitConnected cancelled: %v", err)
	}
	cs, err := c.Stats()
	if err != nil || cs.State == StateConnected || cs.FailedAttempts == 0 {
		t.Fatalf("conn stats %+v %v", cs, err)
	}
	qs, err := q.Stats()
	if err != nil || qs.Buffered != 6 || qs.Published != 6 {
		t.Fatalf("queue stats %+v %v", qs, err)
	}
	unsent, err := c.Close(200 * time.Millisecond)
	if unsent != 6 || !errors.Is(err, ErrTimeout) {
		t.Fatalf("close: unsent %d, %v", unsent, err)
	}
	select {
	case r := <-ch:
		if r.Status != Unsent || r.Err() == nil {
			t.Fatalf("report %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no report after close")
	}
	if _, err := c.Close(time.Second); !errors.Is(err, ErrInvalidHandle) {
		t.Fatalf("second close: %v", err)
	}
	if err := q.PublishString("z"); !errors.Is(err, ErrInvalidHandle) {
		t.Fatalf("publish after close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !logged("127.0.0.1:1") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !logged("WARN") || !logged("127.0.0.1:1") {
		logs.Lock()
		t.Fatalf("library log lines did not reach the handler: %q", logs.lines)
	}
}

// A Consume that ends cancels its pull consumer at the broker
// (amqp_consume_pull_cancel) instead of pausing the queue: a Start after it
// revives no consumer that nobody polls; the next Consume gets what was
// published meanwhile.
func TestConsumeEndsItsBrokerConsumer(t *testing.T) {
	if testCtl == "" {
		t.Skip("RESILIENT_AMQP_TEST_CTL is not set")
	}
	c := connect(t)
	defer closeConn(t, c)
	q := openQueue(t, c, QueueOptions{})
	consumers := func() int {
		out, err := exec.Command("sh", "-c", testCtl+" -q list_queues --no-table-headers name consumers 2>/dev/null").Output()
		if err != nil {
			return -1
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[0] == q.name {
				n, _ := strconv.Atoi(f[1])
				return n
			}
		}
		return -1
	}
	waitConsumers := func(want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for consumers() != want {
			if time.Now().After(deadline) {
				t.Fatalf("the broker shows %d consumers, want %d", consumers(), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i, body := range []string{"one", "two"} {
		if err := q.PublishString(body); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var got string
		err := q.Consume(ctx, func(_ context.Context, d Delivery) Disposition {
			got = string(d.Body)
			cancel()
			return Ack
		}, 1)
		cancel()
		if !errors.Is(err, context.Canceled) || got != body {
			t.Fatalf("Consume %d: %v, got %q", i, err, got)
		}
		waitConsumers(0)
		// Start resumes the queue's consumers: no pull consumer is left
		// to take messages that nobody polls.
		if err := q.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		waitConsumers(0)
	}
}
