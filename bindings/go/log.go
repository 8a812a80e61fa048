package resilientamqp

/*
#include "ra_helpers.h"
*/
import "C"

import (
	"log"
	"sync"
)

// LogLevel is a library log level, most severe first.
type LogLevel int

// The library's log levels.
const (
	LogOff   LogLevel = C.AMQP_LOG_OFF
	LogError LogLevel = C.AMQP_LOG_ERROR
	LogWarn  LogLevel = C.AMQP_LOG_WARN
	LogInfo  LogLevel = C.AMQP_LOG_INFO
	LogDebug LogLevel = C.AMQP_LOG_DEBUG
)

func (l LogLevel) String() string {
	switch l {
	case LogOff:
		return "OFF"
	case LogError:
		return "ERROR"
	case LogWarn:
		return "WARN"
	case LogInfo:
		return "INFO"
	case LogDebug:
		return "DEBUG"
	}
	return "LEVEL?"
}

// LogHandler receives the library's log lines (on the library's "ramqp-log"
// thread, one at a time, in order) and the binding's own (handler panics,
// from the goroutine that saw them). It must not block for long.
type LogHandler func(level LogLevel, msg string)

var logState struct {
	sync.Mutex
	handler   LogHandler
	level     LogLevel
	installed bool // the library's callback is set to level
}

// stdLogHandler writes to the standard logger; replaced by log/slog's
// default logger on Go 1.21 and later (log_slog.go).
var defaultLogHandler LogHandler = func(level LogLevel, msg string) {
	log.Printf("resilient-amqp %s: %s", level, msg)
}

// SetLogHandler routes the library's log lines at `level` and more severe to
// h (nil: the default, log/slog's default logger on Go 1.21+, the standard
// "log" package before). LogOff turns library logging off. Without a call,
// the first Connect routes LogWarn and more severe to the default.
func SetLogHandler(h LogHandler, level LogLevel) {
	logState.Lock()
	defer logState.Unlock()
	logState.handler = h
	logState.level = level
	logState.installed = true
	C.ra_set_log(C.int(level))
}

// ensureLogging installs the default routing once, unless the application
// chose its own.
func ensureLogging() {
	logState.Lock()
	defer logState.Unlock()
	if logState.installed {
		return
	}
	logState.level = LogWarn
	logState.installed = true
	C.ra_set_log(C.int(LogWarn))
}

// logf hands one line to the current handler.
func logLine(level LogLevel, msg string) {
	logState.Lock()
	h, max := logState.handler, logState.level
	logState.Unlock()
	if level > max || max == LogOff {
		return
	}
	if h == nil {
		h = defaultLogHandler
	}
	h(level, msg)
}

//export raGoLog
func raGoLog(level C.int, msg *C.char) {
	// A panicking handler must not unwind into the library's thread.
	defer func() { _ = recover() }()
	logLine(LogLevel(level), C.GoString(msg))
}
