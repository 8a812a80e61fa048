package resilientamqp

/*
#include "ra_helpers.h"
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"time"
	"unsafe"
)

// The callback-mode consumer: the library's consumer threads call a
// cgo-exported Go function for every delivery (one cgo callback per
// message). Not exported: the binding consumes in pull mode (Consume), which
// bench_test.go measures against this.

type callbackConsumer struct {
	q   *Queue
	h   Handler
	ctx context.Context
}

// consumeCallback starts a callback consumer set; stop ends it.
func (q *Queue) consumeCallback(ctx context.Context, h Handler, repeat int) (stop func(), err error) {
	handle := cgo.NewHandle(&callbackConsumer{q: q, h: h, ctx: ctx})
	var id C.uint64_t
	if err := check(C.ra_consume_callback(q.h, C.uintptr_t(handle), C.uint32_t(repeat), &id)); err != nil {
		handle.Delete()
		return nil, err
	}
	return func() {
		_ = check(C.ra_consume_cancel(q.h, id, C.uint32_t((30 * time.Second).Milliseconds())))
		handle.Delete()
	}, nil
}

//export raGoConsume
func raGoConsume(d *C.amqp_delivery, key C.uintptr_t) C.int {
	c := cgo.Handle(key).Value().(*callbackConsumer)
	del := Delivery{
		Body:        C.GoBytes(unsafe.Pointer(d.body), C.int(d.body_len)),
		ID:          uint64(d.delivery_id),
		DeliveryTag: uint64(d.delivery_tag),
		Redelivered: bool(d.redelivered),
		Exchange:    C.GoStringN(d.exchange, C.int(d.exchange_len)),
		RoutingKey:  C.GoStringN(d.routing_key, C.int(d.routing_key_len)),
		Message:     messageFromC(d.message),
		q:           c.q,
	}
	return C.int(c.q.run(c.ctx, c.h, del))
}
