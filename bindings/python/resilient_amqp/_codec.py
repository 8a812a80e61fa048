"""Options strings, header tables and deliveries between Python and C."""
import ctypes
import datetime
import decimal

from . import _ffi
from ._ffi import Field, Value


def option_string(options):
    """dict / str / None -> "key=value&key=value" (booleans as true/false)."""
    if options is None:
        return None
    if isinstance(options, (str, bytes)):
        return options.encode() if isinstance(options, str) else options
    parts = []
    for k, v in options.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        parts.append(f"{k}={v}")
    return "&".join(parts).encode()


def cstr(s):
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    return str(s).encode()


# ---- headers: Python -> amqp_field arrays -------------------------------------------

class Typed:
    """A header value with an explicit AMQP type, e.g. Typed("int8", 5),
    Typed("uint32", 7), Typed("float", 1.5), Typed("bytes", b"..."),
    Typed("timestamp", 1700000000)."""

    __slots__ = ("kind", "value")
    KINDS = {"void": _ffi.V_VOID, "bool": _ffi.V_BOOL, "int": _ffi.V_INT,
             "double": _ffi.V_DOUBLE, "string": _ffi.V_STRING, "bytes": _ffi.V_BYTES,
             "timestamp": _ffi.V_TIMESTAMP, "int8": _ffi.V_INT8, "uint8": _ffi.V_UINT8,
             "int16": _ffi.V_INT16, "uint16": _ffi.V_UINT16, "int32": _ffi.V_INT32,
             "uint32": _ffi.V_UINT32, "float": _ffi.V_FLOAT}

    def __init__(self, kind, value):
        if kind not in self.KINDS:
            raise ValueError(f"unknown header type {kind!r}")
        self.kind = kind
        self.value = value

    def __repr__(self):
        return f"Typed({self.kind!r}, {self.value!r})"


def _fill_value(v, val, keep):
    if isinstance(val, Typed):
        kind = Typed.KINDS[val.kind]
        x = val.value
        if kind in (_ffi.V_STRING, _ffi.V_BYTES):
            b = x.encode() if isinstance(x, str) else bytes(x)
            keep.append(b)
            v.kind, v.bytes, v.len = kind, ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p), len(b)
        elif kind in (_ffi.V_DOUBLE, _ffi.V_FLOAT):
            v.kind, v.number = kind, float(x)
        elif kind == _ffi.V_TIMESTAMP:
            if isinstance(x, datetime.datetime):
                x = int(x.timestamp())
            v.kind, v.integer = kind, ctypes.c_int64(int(x) & 0xFFFFFFFFFFFFFFFF).value
        elif kind == _ffi.V_VOID:
            v.kind = kind
        else:
            v.kind, v.integer = kind, int(x)
        return
    if val is None:
        v.kind = _ffi.V_VOID
    elif isinstance(val, bool):
        v.kind, v.integer = _ffi.V_BOOL, int(val)
    elif isinstance(val, int):
        v.kind, v.integer = _ffi.V_INT, val
    elif isinstance(val, float):
        v.kind, v.number = _ffi.V_DOUBLE, val
    elif isinstance(val, str):
        b = val.encode()
        keep.append(b)
        v.kind, v.bytes, v.len = _ffi.V_STRING, ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p), len(b)
    elif isinstance(val, (bytes, bytearray, memoryview)):
        b = bytes(val)
        keep.append(b)
        v.kind, v.bytes, v.len = _ffi.V_BYTES, ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p), len(b)
    elif isinstance(val, datetime.datetime):
        v.kind, v.integer = _ffi.V_TIMESTAMP, int(val.timestamp())
    elif isinstance(val, decimal.Decimal):
        sign, digits, exp = val.as_tuple()
        if sign or exp > 0 or -exp > 255:
            raise ValueError(f"header decimal {val} is not representable (unsigned, scale 0..255)")
        v.kind, v.integer, v.len = _ffi.V_DECIMAL, int("".join(map(str, digits)) or "0"), -exp
    elif isinstance(val, dict):
        arr = fields_of(val, keep)
        v.kind, v.bytes, v.len = _ffi.V_TABLE, ctypes.cast(arr, ctypes.c_void_p), len(val)
    elif isinstance(val, (list, tuple)):
        arr = (Value * max(len(val), 1))()
        keep.append(arr)
        for i, item in enumerate(val):
            _fill_value(arr[i], item, keep)
        v.kind, v.bytes, v.len = _ffi.V_ARRAY, ctypes.cast(arr, ctypes.c_void_p), len(val)
    else:
        raise TypeError(f"header value of type {type(val).__name__} is not supported")


def fields_of(table, keep):
    arr = (Field * max(len(table), 1))()
    keep.append(arr)
    for i, (k, val) in enumerate(table.items()):
        kb = k.encode() if isinstance(k, str) else bytes(k)
        keep.append(kb)
        arr[i].key = kb
        _fill_value(arr[i].value, val, keep)
    return arr


_STR_PROPS = ("content_type", "content_encoding", "correlation_id", "reply_to",
              "expiration", "message_id", "message_type", "user_id", "app_id")


def build_message(props, keep):
    """props: dict of publish keyword arguments -> amqp_message (or None)."""
    m = _ffi.Message()
    m.size = ctypes.sizeof(_ffi.Message)
    for name in _STR_PROPS:
        val = props.get(name)
        if val is not None:
            b = cstr(val)
            keep.append(b)
            setattr(m, name, b)
    rk = props.get("routing_key")
    if rk is not None:
        b = cstr(rk)
        keep.append(b)
        m.routing_key = b
    headers = props.get("headers")
    if headers is not None:
        m.headers = ctypes.cast(fields_of(headers, keep), ctypes.POINTER(Field))
        m.header_count = len(headers)
    present = 0
    dm = props.get("delivery_mode")
    if dm is not None:
        m.delivery_mode = dm
    pr = props.get("priority")
    if pr is not None:
        m.priority = pr
        present |= _ffi.PROP_PRIORITY
    ts = props.get("timestamp")
    if ts is not None:
        if isinstance(ts, datetime.datetime):
            ts = int(ts.timestamp())
        m.timestamp = int(ts)
        present |= _ffi.PROP_TIMESTAMP
    m.present = present
    tag = props.get("tag")
    if tag is not None:
        m.tag = tag
    return m


# ---- deliveries: C -> Python --------------------------------------------------------

_string_at = ctypes.string_at
_UTC = datetime.timezone.utc


def _value(v):
    k = v.kind
    if k in (_ffi.V_INT, _ffi.V_INT8, _ffi.V_INT16, _ffi.V_INT32):
        return v.integer
    if k in (_ffi.V_UINT8, _ffi.V_UINT16, _ffi.V_UINT32):
        return v.integer & 0xFFFFFFFF
    if k == _ffi.V_STRING:
        return _string_at(v.bytes, v.len).decode("utf-8", "replace") if v.len else ""
    if k == _ffi.V_BYTES:
        return _string_at(v.bytes, v.len) if v.len else b""
    if k == _ffi.V_BOOL:
        return bool(v.integer)
    if k in (_ffi.V_DOUBLE, _ffi.V_FLOAT):
        return v.number
    if k == _ffi.V_TIMESTAMP:
        return datetime.datetime.fromtimestamp(v.integer & 0xFFFFFFFFFFFFFFFF, _UTC)
    if k == _ffi.V_DECIMAL:
        return decimal.Decimal(v.integer & 0xFFFFFFFF).scaleb(-v.len)
    if k == _ffi.V_TABLE:
        return table_of(v.bytes, v.len)
    if k == _ffi.V_ARRAY:
        if not v.len:
            return []
        arr = (Value * v.len).from_address(v.bytes)
        return [_value(x) for x in arr]
    return None


def table_of(ptr, n):
    if not n or not ptr:
        return {}
    arr = (Field * n).from_address(ptr)
    return {f.key.decode("utf-8", "replace"): _value(f.value) for f in arr}


def _s(b):
    return None if b is None else b.decode("utf-8", "replace")
