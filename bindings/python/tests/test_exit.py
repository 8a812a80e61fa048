"""5. Process exit without close never aborts or hangs: 5 times in a row
in a subprocess, with a consumer running and messages in flight (library
threads calling Python handlers and the log callback; and the asyncio
pull consumer)."""
import os
import subprocess
import sys
import time
import unittest

from helpers import HERE, URI, qname

RUNS = 5
LIMIT = 60


class ExitWithoutClose(unittest.TestCase):
    def run_child(self, mode):
        for run in range(RUNS):
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, os.path.join(HERE, "exit_child.py"), URI,
                                qname("exit"), mode], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=LIMIT)
            took = time.monotonic() - t0
            err = p.stderr
            self.assertEqual(p.returncode, 0, f"run {run + 1}: status {p.returncode}\n{err}")
            self.assertNotIn("FATAL", err, f"run {run + 1}")
            self.assertNotIn("panicked", err, f"run {run + 1}")
            self.assertNotIn("Traceback", err, f"run {run + 1}: {err}")
            self.assertIn("exiting", err, f"run {run + 1}: {err}")
            self.assertLess(took, LIMIT)

    def test_exit_with_callback_consumer_running(self):
        self.run_child("callback")

    def test_exit_with_asyncio_consumer_running(self):
        self.run_child("async")


if __name__ == "__main__":
    unittest.main()
