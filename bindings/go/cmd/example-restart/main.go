// Command example-restart publishes 1,000 messages through a broker restart
// and reads them all back: nothing is lost.
//
//	example-restart URI [CTL]
//
// With CTL (a command prefix running rabbitmqctl, e.g. "scripts/broker.sh
// ctl") the broker is stopped after the first 500 messages (stop_app) and
// started again 2 s later (start_app), while publishing goes on.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"time"

	ra "github.com/resilient-amqp/resilient-amqp/bindings/go"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: example-restart URI [CTL]")
	}
	ctl := ""
	if len(os.Args) > 2 {
		ctl = os.Args[2]
	}
	conn, err := ra.Connect(os.Args[1], nil)
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		unsent, err := conn.Close(10 * time.Second)
		fmt.Printf("closed: %d unsent, %v\n", unsent, err)
	}()
	q, err := conn.Queue(fmt.Sprint("example-restart-", time.Now().UnixNano()), ra.QueueOptions{})
	if err != nil {
		log.Fatal(err)
	}

	const n = 1000
	for i := 0; i < n; i++ {
		if i == n/2 && ctl != "" {
			run(ctl + " stop_app")
			go func() { time.Sleep(2 * time.Second); run(ctl + " start_app") }()
		}
		// Stored in the library's buffer; sent (again) once the broker is back.
		if err := q.PublishString(fmt.Sprint("order ", i)); err != nil {
			log.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seen := map[string]bool{}
	err = q.Consume(ctx, func(ctx context.Context, d ra.Delivery) ra.Disposition {
		seen[string(d.Body)] = true
		if len(seen) == n {
			cancel()
		}
		return ra.Ack
	}, 1)
	st, _ := q.Stats()
	cs, _ := conn.Stats()
	fmt.Printf("received %d of %d distinct messages (%d resent, %d connects)\n", len(seen), n, st.Resent, cs.Connects)
	if len(seen) != n {
		log.Fatalf("lost %d: %v", n-len(seen), err)
	}
}

func run(cmd string) {
	if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
		log.Printf("%s: %v\n%s", cmd, err, out)
	}
}
