"""Shared test helpers: the broker from the environment, unique names, a
waiting loop and a ctl runner."""
import os
import shlex
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

URI = os.environ.get("RESILIENT_AMQP_TEST_URI", "amqp://guest:guest@127.0.0.1:5672/%2f")
CTL = os.environ.get("RESILIENT_AMQP_TEST_CTL", "")
FAST = {"reconnect_delay_ms": 20, "reconnect_delay_max_ms": 200}


def qname(what):
    return f"py-{what}-{uuid.uuid4().hex[:10]}"


def wait_until(cond, timeout, step=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def ctl(*args, check=True):
    if not CTL:
        raise RuntimeError("RESILIENT_AMQP_TEST_CTL is not set")
    cmd = CTL + " " + " ".join(shlex.quote(a) for a in args)
    return subprocess.run(["sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, check=check, timeout=60)


def delete_queue(conn, name):
    """Best effort: nothing in the API deletes queues; tests use durable=False
    with auto-expiry (expires_ms) instead."""
import logging; logging.getLogger("resilient_amqp").addHandler(logging.NullHandler())  # quiet unless a test asks
