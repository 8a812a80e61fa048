package resilientamqp

/*
#include <stdlib.h>
#include <string.h>
#include "ra_helpers.h"
*/
import "C"

import (
	"fmt"
	"math"
	"sort"
	"time"
	"unsafe"
)

// Property flags (Message.Present on a delivery).
const (
	PropContentType     = C.AMQP_PROP_CONTENT_TYPE
	PropContentEncoding = C.AMQP_PROP_CONTENT_ENCODING
	PropHeaders         = C.AMQP_PROP_HEADERS
	PropDeliveryMode    = C.AMQP_PROP_DELIVERY_MODE
	PropPriority        = C.AMQP_PROP_PRIORITY
	PropCorrelationID   = C.AMQP_PROP_CORRELATION_ID
	PropReplyTo         = C.AMQP_PROP_REPLY_TO
	PropExpiration      = C.AMQP_PROP_EXPIRATION
	PropMessageID       = C.AMQP_PROP_MESSAGE_ID
	PropTimestamp       = C.AMQP_PROP_TIMESTAMP
	PropType            = C.AMQP_PROP_TYPE
	PropUserID          = C.AMQP_PROP_USER_ID
	PropAppID           = C.AMQP_PROP_APP_ID
)

// Message holds a message's AMQP properties, headers and (when publishing)
// a routing key of its own. Empty fields are not sent. On a delivery,
// Present says which properties the message carried.
//
// Header values: string, []byte, bool, int/int64 (signed 64-bit; uint and
// uint64 up to 2^63-1 are sent as such and read back as int64), int8,
// uint8, int16, uint16, int32, uint32, float64, float32, time.Time (a
// timestamp, seconds), Decimal, nil (void), map[string]any (a nested table)
// and []any (an array). Deliveries give them back with the same Go types.
type Message struct {
	RoutingKey      string // publish only: overrides the queue's key
	ContentType     string
	ContentEncoding string
	Headers         map[string]any
	DeliveryMode    uint8 // 1 transient, 2 persistent, 0: the queue's option
	Priority        uint8 // sent when not 0 (or Present has PropPriority)
	CorrelationID   string
	ReplyTo         string
	Expiration      string // milliseconds as decimal digits
	MessageID       string
	Timestamp       time.Time // sent when not zero (seconds)
	Type            string
	UserID          string
	AppID           string
	Present         uint16 // Prop* bits
}

// Decimal is an AMQP decimal header value: Value * 10^-Scale.
type Decimal struct {
	Scale uint8
	Value uint32
}

// arena holds C memory for one call, freed after it.
type arena struct{ ptrs []unsafe.Pointer }

func (a *arena) alloc(n uintptr) unsafe.Pointer {
	p := C.calloc(1, C.size_t(n))
	a.ptrs = append(a.ptrs, p)
	return p
}

func (a *arena) str(s string) *C.char {
	if s == "" {
		return nil
	}
	p := C.CString(s)
	a.ptrs = append(a.ptrs, unsafe.Pointer(p))
	return p
}

func (a *arena) bytes(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	p := C.CBytes(b)
	a.ptrs = append(a.ptrs, p)
	return p
}

func (a *arena) free() {
	for _, p := range a.ptrs {
		C.free(p)
	}
}

func (m *Message) toC(a *arena) (*C.amqp_message, error) {
	cm := (*C.amqp_message)(a.alloc(C.sizeof_amqp_message))
	cm.size = C.sizeof_amqp_message
	cm.routing_key = a.str(m.RoutingKey)
	cm.content_type = a.str(m.ContentType)
	cm.content_encoding = a.str(m.ContentEncoding)
	cm.delivery_mode = C.uint8_t(m.DeliveryMode)
	cm.priority = C.uint8_t(m.Priority)
	cm.present = C.uint16_t(m.Present & (PropPriority | PropTimestamp))
	cm.correlation_id = a.str(m.CorrelationID)
	cm.reply_to = a.str(m.ReplyTo)
	cm.expiration = a.str(m.Expiration)
	cm.message_id = a.str(m.MessageID)
	if !m.Timestamp.IsZero() {
		cm.timestamp = C.uint64_t(m.Timestamp.Unix())
	}
	cm.message_type = a.str(m.Type)
	cm.user_id = a.str(m.UserID)
	cm.app_id = a.str(m.AppID)
	if m.Headers != nil {
		f, n, err := tableToC(a, m.Headers, 0)
		if err != nil {
			return nil, err
		}
		cm.headers, cm.header_count = f, C.size_t(n)
	}
	return cm, nil
}

func tableToC(a *arena, t map[string]any, depth int) (*C.amqp_field, int, error) {
	if depth > 32 {
		return nil, 0, invalid("headers nested over 32 deep")
	}
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	// Non-NULL with 0 entries is an empty table.
	fields := unsafe.Slice((*C.amqp_field)(a.alloc(C.sizeof_amqp_field*uintptr(len(keys)+1))), len(keys)+1)
	for i, k := range keys {
		if k == "" {
			return nil, 0, invalid("a header key is empty")
		}
		fields[i].key = a.str(k)
		if err := valueToC(a, &fields[i].value, t[k], depth); err != nil {
			return nil, 0, fmt.Errorf("header %q: %w", k, err)
		}
	}
	return &fields[0], len(keys), nil
}

func valueToC(a *arena, v *C.amqp_value, x any, depth int) error {
	switch x := x.(type) {
	case nil:
		v.kind = C.AMQP_VALUE_VOID
	case bool:
		v.kind = C.AMQP_VALUE_BOOL
		if x {
			v.integer = 1
		}
	case int:
		v.kind, v.integer = C.AMQP_VALUE_INT, C.int64_t(x)
	case int64:
		v.kind, v.integer = C.AMQP_VALUE_INT, C.int64_t(x)
	case uint:
		if uint64(x) > math.MaxInt64 {
			return invalid("header value %d does not fit a signed 64-bit integer", x)
		}
		v.kind, v.integer = C.AMQP_VALUE_INT, C.int64_t(x)
	case uint64:
		if x > math.MaxInt64 {
			return invalid("header value %d does not fit a signed 64-bit integer", x)
		}
		v.kind, v.integer = C.AMQP_VALUE_INT, C.int64_t(x)
	case int8:
		v.kind, v.integer = C.AMQP_VALUE_INT8, C.int64_t(x)
	case uint8:
		v.kind, v.integer = C.AMQP_VALUE_UINT8, C.int64_t(x)
	case int16:
		v.kind, v.integer = C.AMQP_VALUE_INT16, C.int64_t(x)
	case uint16:
		v.kind, v.integer = C.AMQP_VALUE_UINT16, C.int64_t(x)
	case int32:
		v.kind, v.integer = C.AMQP_VALUE_INT32, C.int64_t(x)
	case uint32:
		v.kind, v.integer = C.AMQP_VALUE_UINT32, C.int64_t(x)
	case float64:
		v.kind, v.number = C.AMQP_VALUE_DOUBLE, C.double(x)
	case float32:
		v.kind, v.number = C.AMQP_VALUE_FLOAT, C.double(x)
	case string:
		v.kind, v.bytes, v.len = C.AMQP_VALUE_STRING, a.bytes([]byte(x)), C.size_t(len(x))
	case []byte:
		v.kind, v.bytes, v.len = C.AMQP_VALUE_BYTES, a.bytes(x), C.size_t(len(x))
	case time.Time:
		v.kind, v.integer = C.AMQP_VALUE_TIMESTAMP, C.int64_t(x.Unix())
	case Decimal:
		v.kind, v.integer, v.len = C.AMQP_VALUE_DECIMAL, C.int64_t(x.Value), C.size_t(x.Scale)
	case map[string]any:
		f, n, err := tableToC(a, x, depth+1)
		if err != nil {
			return err
		}
		v.kind, v.bytes, v.len = C.AMQP_VALUE_TABLE, unsafe.Pointer(f), C.size_t(n)
	case []any:
		vals := unsafe.Slice((*C.amqp_value)(a.alloc(C.sizeof_amqp_value*uintptr(len(x)+1))), len(x)+1)
		for i, e := range x {
			if err := valueToC(a, &vals[i], e, depth+1); err != nil {
				return err
			}
		}
		v.kind, v.bytes, v.len = C.AMQP_VALUE_ARRAY, unsafe.Pointer(&vals[0]), C.size_t(len(x))
	default:
		return invalid("header value of type %T is not supported", x)
	}
	return nil
}

func goStr(p *C.char) string {
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

// messageFromC reads a delivery's properties.
func messageFromC(cm *C.amqp_message) Message {
	if cm == nil || cm.present == 0 {
		return Message{}
	}
	m := Message{
		ContentType:     goStr(cm.content_type),
		ContentEncoding: goStr(cm.content_encoding),
		DeliveryMode:    uint8(cm.delivery_mode),
		Priority:        uint8(cm.priority),
		CorrelationID:   goStr(cm.correlation_id),
		ReplyTo:         goStr(cm.reply_to),
		Expiration:      goStr(cm.expiration),
		MessageID:       goStr(cm.message_id),
		Type:            goStr(cm.message_type),
		UserID:          goStr(cm.user_id),
		AppID:           goStr(cm.app_id),
		Present:         uint16(cm.present),
	}
	if m.Present&PropTimestamp != 0 {
		m.Timestamp = time.Unix(int64(cm.timestamp), 0)
	}
	if m.Present&PropHeaders != 0 {
		m.Headers = tableFromC(cm.headers, int(cm.header_count))
	}
	return m
}

func tableFromC(f *C.amqp_field, n int) map[string]any {
	t := make(map[string]any, n)
	if f == nil || n == 0 {
		return t
	}
	for _, e := range unsafe.Slice(f, n) {
		t[goStr(e.key)] = valueFromC(&e.value)
	}
	return t
}

func valueFromC(v *C.amqp_value) any {
	switch v.kind {
	case C.AMQP_VALUE_VOID:
		return nil
	case C.AMQP_VALUE_BOOL:
		return v.integer != 0
	case C.AMQP_VALUE_INT:
		return int64(v.integer)
	case C.AMQP_VALUE_INT8:
		return int8(v.integer)
	case C.AMQP_VALUE_UINT8:
		return uint8(v.integer)
	case C.AMQP_VALUE_INT16:
		return int16(v.integer)
	case C.AMQP_VALUE_UINT16:
		return uint16(v.integer)
	case C.AMQP_VALUE_INT32:
		return int32(v.integer)
	case C.AMQP_VALUE_UINT32:
		return uint32(v.integer)
	case C.AMQP_VALUE_DOUBLE:
		return float64(v.number)
	case C.AMQP_VALUE_FLOAT:
		return float32(v.number)
	case C.AMQP_VALUE_STRING:
		return string(C.GoBytes(v.bytes, C.int(v.len)))
	case C.AMQP_VALUE_BYTES:
		return C.GoBytes(v.bytes, C.int(v.len))
	case C.AMQP_VALUE_TIMESTAMP:
		return time.Unix(int64(uint64(v.integer)), 0)
	case C.AMQP_VALUE_DECIMAL:
		return Decimal{Scale: uint8(v.len), Value: uint32(v.integer)}
	case C.AMQP_VALUE_TABLE:
		return tableFromC((*C.amqp_field)(v.bytes), int(v.len))
	case C.AMQP_VALUE_ARRAY:
		out := make([]any, int(v.len))
		if v.len > 0 {
			for i, e := range unsafe.Slice((*C.amqp_value)(v.bytes), int(v.len)) {
				e := e
				out[i] = valueFromC(&e)
			}
		}
		return out
	}
	return nil
}
