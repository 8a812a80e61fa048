"""resilient_amqp: Python binding of resilient-amqp (a RabbitMQ client that
does not lose messages when the broker goes away), over its C ABI with ctypes.

    from resilient_amqp import Connection
    with Connection("amqp://guest:guest@localhost:5672/%2f") as conn:
        q = conn.queue("orders", durable=False)
        q.publish("hello", content_type="text/plain", headers={"n": 1})
        q.consume(lambda msg: print(msg.text))

asyncio: resilient_amqp.aio.AsyncConnection (pull mode, nothing of yours
runs on a library thread).
"""
from . import _ffi
from ._codec import Typed
from .client import (ACK, DEFER, REJECT, REQUEUE, CloseReport, Connection, ConnectionStats,
                     Consumer, Disposition, Message, Queue, QueueStats, set_log_level)
from .errors import (AlreadySettled, AmqpError, BrokerError, BufferFull, Closed, InternalError,
                     InvalidArgument, InvalidHandle, MessageTooLarge, NotConnected, PublishFailed,
                     StaleDelivery, Timeout)

__version__ = "0.1.0"


def abi_version():
    """The loaded library's contract version (AMQP_ABI_VERSION it was built with)."""
    return _ffi.lib.amqp_abi_version()


def __getattr__(name):  # lazy: importing asyncio only when wanted
    if name in ("AsyncConnection", "AsyncQueue", "aio"):
        import importlib
        aio = importlib.import_module(__name__ + ".aio")
        return aio if name == "aio" else getattr(aio, name)
    raise AttributeError(name)


__all__ = [
    "ACK", "DEFER", "REJECT", "REQUEUE", "AlreadySettled", "AmqpError", "AsyncConnection",
    "AsyncQueue", "BrokerError", "BufferFull", "CloseReport", "Closed", "Connection",
    "ConnectionStats", "Consumer", "Disposition", "InternalError", "InvalidArgument",
    "InvalidHandle", "Message", "MessageTooLarge", "NotConnected", "PublishFailed", "Queue",
    "QueueStats", "StaleDelivery", "Timeout", "Typed", "abi_version", "set_log_level",
]
