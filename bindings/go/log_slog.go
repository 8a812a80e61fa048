//go:build go1.21

package resilientamqp

import (
	"context"
	"log/slog"
)

func init() {
	defaultLogHandler = func(level LogLevel, msg string) {
		slog.Default().Log(context.Background(), SlogLevel(level), msg, "lib", "resilient-amqp")
	}
}

// SlogLevel maps a library level to a log/slog level.
func SlogLevel(l LogLevel) slog.Level {
	switch l {
	case LogError:
		return slog.LevelError
	case LogWarn:
		return slog.LevelWarn
	case LogInfo:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// SetSlogLogger routes the library's log lines at `level` and more severe to
// logger (attribute lib=resilient-amqp).
func SetSlogLogger(logger *slog.Logger, level LogLevel) {
	SetLogHandler(func(l LogLevel, msg string) {
		logger.Log(context.Background(), SlogLevel(l), msg, "lib", "resilient-amqp")
	}, level)
}
