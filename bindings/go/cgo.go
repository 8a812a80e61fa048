// Package resilientamqp is the Go binding of resilient-amqp, a RabbitMQ
// (AMQP 0-9-1) client that does not lose messages when the broker goes away.
// It is a thin cgo layer over the library's C ABI (resilient_amqp.h and
// libresilient_amqp.so); see README.md for building and threads.
package resilientamqp

/*
#cgo !resilient_amqp_pkgconfig LDFLAGS: -lresilient_amqp
#cgo resilient_amqp_pkgconfig pkg-config: resilient_amqp
#include "ra_helpers.h"
*/
import "C"

// ABIVersion is the contract version of the loaded library (the binding needs 3).
func ABIVersion() uint32 { return uint32(C.amqp_abi_version()) }
