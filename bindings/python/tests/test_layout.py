"""The ctypes declarations match the header: every struct's size and field
offsets and the constants, as a C compiler sees them (a drift between
resilient_amqp/_ffi.py and include/resilient_amqp.h fails here)."""
import os
import shutil
import subprocess
import tempfile
import unittest

from helpers import HERE

from resilient_amqp import _ffi

INCLUDE = os.environ.get("RESILIENT_AMQP_INCLUDE_DIR") or os.path.join(HERE, "..", "..", "..",
                                                                       "include")
STRUCTS = {
    "amqp_value": _ffi.Value, "amqp_field": _ffi.Field, "amqp_message": _ffi.Message,
    "amqp_delivery": _ffi.Delivery, "amqp_queue_stats": _ffi.QueueStats,
    "amqp_connection_stats": _ffi.ConnectionStats, "amqp_close_report": _ffi.CloseReport,
    "amqp_delivery_report": _ffi.DeliveryReport,
}
CONSTANTS = {
    "AMQP_ERR_INVALID_ARGUMENT": _ffi.ERR_INVALID_ARGUMENT, "AMQP_ERR_BROKER": _ffi.ERR_BROKER,
    "AMQP_ERR_ALREADY_SETTLED": _ffi.ERR_ALREADY_SETTLED, "AMQP_ERR_TIMEOUT": _ffi.ERR_TIMEOUT,
    "AMQP_ERR_CLOSED": _ffi.ERR_CLOSED, "AMQP_ERR_STALE_DELIVERY": _ffi.ERR_STALE_DELIVERY,
    "AMQP_ACK": _ffi.ACK, "AMQP_REJECT": _ffi.REJECT, "AMQP_REQUEUE": _ffi.REQUEUE,
    "AMQP_DEFER": _ffi.DEFER, "AMQP_PROP_HEADERS": _ffi.PROP_HEADERS,
    "AMQP_PROP_APP_ID": _ffi.PROP_APP_ID, "AMQP_VALUE_DECIMAL": _ffi.V_DECIMAL,
    "AMQP_VALUE_ARRAY": _ffi.V_ARRAY, "AMQP_VALUE_UINT32": _ffi.V_UINT32,
}


@unittest.skipUnless(shutil.which("gcc"), "gcc is not installed")
class Layout(unittest.TestCase):
    def test_structs_and_constants_match_the_header(self):
        lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "resilient_amqp.h"',
                 "int main(void) {"]
        for cname, ctype in STRUCTS.items():
            lines.append(f'printf("{cname} sizeof %zu\\n", sizeof(struct {cname}));')
            for fname, _ in ctype._fields_:
                cf = fname
                lines.append(f'printf("{cname} {fname} %zu\\n", offsetof(struct {cname}, {cf}));')
        for k in CONSTANTS:
            lines.append(f'printf("const {k} %ld\\n", (long){k});')
        lines.append("return 0; }")
        with tempfile.TemporaryDirectory() as d:
            src, exe = os.path.join(d, "layout.c"), os.path.join(d, "layout")
            with open(src, "w") as f:
                f.write("\n".join(lines))
            subprocess.run(["gcc", "-std=c11", "-I", INCLUDE, src, "-o", exe], check=True)
            out = subprocess.run([exe], check=True, stdout=subprocess.PIPE, text=True).stdout
        c = {}
        for line in out.splitlines():
            a, b, v = line.split()
            c[(a, b)] = int(v)
        for cname, ctype in STRUCTS.items():
            self.assertEqual(ctypes_sizeof(ctype), c[(cname, "sizeof")], cname)
            for fname, _ in ctype._fields_:
                self.assertEqual(getattr(ctype, fname).offset, c[(cname, fname)],
                                 f"{cname}.{fname}")
        for k, v in CONSTANTS.items():
            self.assertEqual(v, c[("const", k)], k)


def ctypes_sizeof(t):
    import ctypes
    return ctypes.sizeof(t)


if __name__ == "__main__":
    unittest.main()
