package resilientamqp

/*
#include <stdlib.h>
#include "ra_helpers.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Code is a library result code (amqp_result).
type Code int

// The library's result codes.
const (
	CodeOK              Code = C.AMQP_OK
	CodeInvalidArgument Code = C.AMQP_ERR_INVALID_ARGUMENT
	CodeInvalidHandle   Code = C.AMQP_ERR_INVALID_HANDLE
	CodeBufferFull      Code = C.AMQP_ERR_BUFFER_FULL
	CodeMessageTooLarge Code = C.AMQP_ERR_MESSAGE_TOO_LARGE
	CodeClosed          Code = C.AMQP_ERR_CLOSED
	CodeTimeout         Code = C.AMQP_ERR_TIMEOUT
	CodeNotConnected    Code = C.AMQP_ERR_NOT_CONNECTED
	CodeBroker          Code = C.AMQP_ERR_BROKER
	CodeInternal        Code = C.AMQP_ERR_INTERNAL
	CodeStaleDelivery   Code = C.AMQP_ERR_STALE_DELIVERY
	CodeAlreadySettled  Code = C.AMQP_ERR_ALREADY_SETTLED
)

// String is the library's name of the code, e.g. "AMQP_ERR_CLOSED".
func (c Code) String() string { return C.GoString(C.amqp_result_str(C.amqp_result(c))) }

// Error is a failed library call: its result code and the library's message
// text (the broker's text for CodeBroker).
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "resilient-amqp: " + e.Code.String()
	}
	return fmt.Sprintf("resilient-amqp: %s: %s", e.Code, e.Message)
}

// Is makes errors.Is(err, ErrClosed) (and the other sentinels) match any
// *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrInvalidArgument = &Error{Code: CodeInvalidArgument}
	ErrInvalidHandle   = &Error{Code: CodeInvalidHandle}
	ErrBufferFull      = &Error{Code: CodeBufferFull}
	ErrMessageTooLarge = &Error{Code: CodeMessageTooLarge}
	ErrClosed          = &Error{Code: CodeClosed}
	ErrTimeout         = &Error{Code: CodeTimeout}
	ErrNotConnected    = &Error{Code: CodeNotConnected}
	ErrBroker          = &Error{Code: CodeBroker}
	ErrInternal        = &Error{Code: CodeInternal}
	ErrStaleDelivery   = &Error{Code: CodeStaleDelivery}
	ErrAlreadySettled  = &Error{Code: CodeAlreadySettled}
)

// check turns a helper's result and its own error text into an error,
// freeing the text.
func check(r C.ra_ret) error {
	if r.r == C.AMQP_OK {
		return nil
	}
	msg := ""
	if r.err != nil {
		msg = C.GoString(r.err)
		C.free(unsafe.Pointer(r.err))
	}
	return &Error{Code: Code(r.r), Message: msg}
}

func invalid(format string, a ...any) error {
	return &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf(format, a...)}
}

// bytesPtr is the address of a body for C (nil for an empty one).
func bytesPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}
