"""Exceptions: every failed library call raises an AmqpError subclass that
carries the library's result code (`code`, `code_name`) and message text."""
import ctypes

from . import _ffi


class AmqpError(Exception):
    """A failed call: `code` is the amqp_result, `message` the library's text."""

    code = None

    def __init__(self, code, message=""):
        self.code = code
        self.message = message
        super().__init__(code, message)

    @property
    def code_name(self):
        return result_name(self.code)

    def __str__(self):
        if self.message:
            return f"{self.code_name}: {self.message}"
        return self.code_name


class InvalidArgument(AmqpError, ValueError):
    pass


class InvalidHandle(AmqpError):
    pass


class BufferFull(AmqpError):
    pass


class MessageTooLarge(AmqpError, ValueError):
    pass


class Closed(AmqpError):
    pass


class Timeout(AmqpError, TimeoutError):
    pass


class NotConnected(AmqpError):
    pass


class BrokerError(AmqpError):
    pass


class InternalError(AmqpError):
    pass


class StaleDelivery(AmqpError):
    pass


class AlreadySettled(AmqpError):
    pass


class PublishFailed(AmqpError):
    """A publish_confirmed message that ended in a failure report: `status`
    (NACKED, REFUSED, TOO_LARGE, EXPIRED, UNSENT, UNROUTABLE), `reply_code`,
    `attempts`; `code` is None (no amqp_result)."""

    def __init__(self, status, message, reply_code=0, attempts=0):
        self.status = status
        self.reply_code = reply_code
        self.attempts = attempts
        super().__init__(None, message)

    @property
    def code_name(self):
        return self.status

    def __str__(self):
        return f"{self.status}: {self.message}" if self.message else self.status


_BY_CODE = {
    _ffi.ERR_INVALID_ARGUMENT: InvalidArgument,
    _ffi.ERR_INVALID_HANDLE: InvalidHandle,
    _ffi.ERR_BUFFER_FULL: BufferFull,
    _ffi.ERR_MESSAGE_TOO_LARGE: MessageTooLarge,
    _ffi.ERR_CLOSED: Closed,
    _ffi.ERR_TIMEOUT: Timeout,
    _ffi.ERR_NOT_CONNECTED: NotConnected,
    _ffi.ERR_BROKER: BrokerError,
    _ffi.ERR_INTERNAL: InternalError,
    _ffi.ERR_STALE_DELIVERY: StaleDelivery,
    _ffi.ERR_ALREADY_SETTLED: AlreadySettled,
}


def result_name(code):
    if code is None:
        return "AMQP_ERROR"
    return _ffi.lib.amqp_result_str(code).decode()


def error_for(code, message):
    return _BY_CODE.get(code, AmqpError)(code, message)


ERRCAP = 1024


def errbuf():
    return ctypes.create_string_buffer(ERRCAP)


def raise_e(code, buf):
    """For the _e variants: the text is in the caller's buffer of this call."""
    raise error_for(code, buf.value.decode("utf-8", "replace"))


def raise_last(code):
    """For calls without an _e variant: amqp_last_error is per OS thread and
    a Python thread stays on its OS thread, so reading it right after the
    call on the same thread gives this call's text."""
    buf = ctypes.create_string_buffer(ERRCAP)
    _ffi.lib.amqp_last_error(buf, ERRCAP)
    raise error_for(code, buf.value.decode("utf-8", "replace"))
