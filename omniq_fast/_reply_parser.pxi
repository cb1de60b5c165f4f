# Included by _core.pyx (one extension, split for length): the RESP reply parser, the
# twin of the "reply parsing" section of _core_py.py, which explains each rule.

# --------------------------------------------------------------------------- reply parsing


class PushNotification(list):
    """A RESP3 push message (``>``): out-of-band data such as a pub/sub message, told apart
    from command replies by its type, as ``hiredis.PushNotification`` is."""


cdef enum:
    _MAX_DEPTH = 64
cdef long long _MAX_BULK = 512 * 1024 * 1024
cdef long long _MAX_ELEMENTS = 4294967295  # 2**32 - 1
# A buffer this big is freed once drained, so one huge reply does not pin its memory.
cdef Py_ssize_t _KEEP_CAPACITY = 64 * 1024

cdef object _INCOMPLETE = object()


cdef Py_ssize_t _line_limit(unsigned char kind) noexcept:
    """The longest line ``kind`` can carry before its CRLF; -1 for an unknown type byte."""
    if kind in b"*%~>|$=:":
        return 20
    if kind == b",":
        return 325
    if kind == b"_":
        return 0
    if kind == b"#":
        return 1
    if kind in b"(+-":
        return _MAX_BULK
    return -1


cdef Py_ssize_t _find_crlf(const char* data, Py_ssize_t start, Py_ssize_t size) noexcept:
    """Index of the first CRLF at or after ``start``, or -1."""
    cdef const char* cr
    while start < size - 1:
        # Only look where a "\n" can still follow.
        cr = <const char*>memchr(data + start, b"\r", size - 1 - start)
        if cr == NULL:
            return -1
        start = cr - data
        if data[start + 1] == b"\n":
            return start
        start += 1
    return -1


cdef bint _parse_integer(const char* text, Py_ssize_t size, long long* value) noexcept:
    """hiredis' string2ll: "0" or an optional "-" and digits without a leading zero, within
    a long long. ``size`` is at most 20 (the line limit)."""
    cdef Py_ssize_t i = 0
    cdef bint negative = False
    cdef unsigned long long magnitude = 0, bound
    cdef unsigned int digit
    if size == 1 and text[0] == b"0":
        value[0] = 0
        return True
    if size and text[0] == b"-":
        negative = True
        i = 1
    if i >= size or not (b"1" <= text[i] <= b"9"):
        return False
    bound = (1ULL << 63) if negative else (1ULL << 63) - 1
    while i < size:
        if not (b"0" <= text[i] <= b"9"):
            return False
        digit = text[i] - 48
        if magnitude > (bound - digit) // 10:
            return False
        magnitude = magnitude * 10 + digit
        i += 1
    # -(magnitude - 1) - 1 reaches LLONG_MIN without overflowing.
    value[0] = -<long long>(magnitude - 1) - 1 if negative else <long long>magnitude
    return True


cdef long long _length(const char* text, Py_ssize_t size, str what, long long limit) except? -2:
    cdef long long value
    if not _parse_integer(text, size, &value):
        raise ProtocolError(f"bad {what}: {text[:size]!r}")
    if value < -1 or value > limit:
        raise ProtocolError(f"{what} out of range: {value}")
    return value


cdef bint _lower_equals(const char* text, Py_ssize_t size, const char* word) noexcept:
    """Whether ``text`` is ``word`` (lower case), ignoring the case of ASCII letters only."""
    cdef Py_ssize_t i
    cdef char c
    for i in range(size):
        c = text[i]
        if b"A" <= c <= b"Z":
            c += 32
        if word[i] == 0 or c != word[i]:
            return False
    return word[size] == 0


cdef double _double(const char* text, Py_ssize_t size) except? -1.0:
    cdef char copy[326]
    cdef Py_ssize_t i = 0
    cdef int digits = 0
    cdef bint significant = False
    cdef double value
    if _lower_equals(text, size, b"inf"):
        return INFINITY
    if _lower_equals(text, size, b"-inf"):
        return -INFINITY
    if _lower_equals(text, size, b"nan") or _lower_equals(text, size, b"-nan"):
        return NAN
    # The twin's _DOUBLE_TEXT, by hand: -?(digits[.digits?]|.digits)([eE][-+]?digits)?
    if i < size and text[i] == b"-":
        i += 1
    while i < size and b"0" <= text[i] <= b"9":
        significant |= text[i] != b"0"
        digits += 1
        i += 1
    if i < size and text[i] == b".":
        i += 1
        while i < size and b"0" <= text[i] <= b"9":
            significant |= text[i] != b"0"
            digits += 1
            i += 1
    if digits and i < size and (text[i] == b"e" or text[i] == b"E"):
        i += 1
        if i < size and (text[i] == b"-" or text[i] == b"+"):
            i += 1
        if i == size:
            digits = 0
        while i < size and b"0" <= text[i] <= b"9":
            i += 1
    if not digits or i != size:
        raise ProtocolError(f"bad double: {text[:min(size, 40)]!r}")
    memcpy(copy, text, size)  # size <= 325: the line limit
    copy[size] = 0
    value = PyOS_string_to_double(copy, NULL, NULL)
    if isinf(value) or (value == 0.0 and significant):
        raise ProtocolError(f"double out of range: {text[:min(size, 40)]!r}")
    return value


cdef object _close(unsigned char kind, list items):
    cdef dict pairs
    cdef Py_ssize_t i
    if kind == b"%":
        # hiredis' placeholder-then-popitem, kept so repeated keys come out as in hiredis.
        pairs = {}
        for i in range(0, len(items), 2):
            pairs[items[i]] = None
            last, _ = pairs.popitem()
            pairs[last] = items[i + 1]
        return pairs
    if kind == b">":
        return PushNotification(items)
    return items


cdef class ReplyParser:
    """Incremental RESP2/RESP3 reply parser with ``hiredis.Reader``'s interface.

    ``feed`` bytes as they arrive from the socket, then call ``gets`` until it returns
    ``False`` (the next reply has not fully arrived). Replies come back as hiredis gives
    them: bulk and status strings as bytes, integers as int, nil and RESP3 null as None,
    arrays, sets and attributes as lists, maps as dicts, pushes as
    :class:`PushNotification`, doubles as float, booleans as bool, big numbers as their
    digits (bytes), verbatim strings without their format prefix, and error replies as
    :class:`ReplyError` instances, returned rather than raised. A RESP3 false is ``False``
    too, which hiredis does not tell apart from "incomplete" either.

    Malformed input raises :class:`ProtocolError`, on that call and every later one: the
    stream cannot be resynchronised. A reply arriving in many small pieces is parsed
    once: finished elements are kept between calls, not re-read.
    """

    # The bytes received: [_pos, _size) is still to parse, [0, _pos) is spent.
    cdef char* _buf
    cdef Py_ssize_t _size
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _scanned
    # The open containers, outermost first: type byte, elements still needed, elements.
    cdef Py_ssize_t _depth
    cdef unsigned char _kinds[_MAX_DEPTH]
    cdef long long _remaining[_MAX_DEPTH]
    cdef list _items
    cdef str _error
    cdef bint _busy  # inside gets(): see _check_idle

    def __cinit__(self):
        self._items = []

    def __dealloc__(self):
        PyMem_Free(self._buf)

    def feed(self, data: bytes) -> None:
        """Append bytes received from the server."""
        cdef Py_buffer view
        self._check_idle()
        if self._error is not None:
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._append(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef int _append(self, const char* data, Py_ssize_t size) except -1:
        cdef Py_ssize_t capacity
        cdef char* grown
        if size == 0:
            return 0
        if self._size + size > self._capacity:
            # Slide the unparsed tail to the front only when at least as much has been
            # spent, so every byte moved was paid for by one consumed: linear overall.
            if self._pos and self._pos >= self._size - self._pos:
                memmove(self._buf, self._buf + self._pos, self._size - self._pos)
                self._size -= self._pos
                self._pos = 0
            if self._size + size > self._capacity:
                capacity = max(2 * self._capacity, self._size + size, 4096)
                grown = <char*>PyMem_Realloc(self._buf, capacity)
                if grown == NULL:
                    raise MemoryError()
                self._buf = grown
                self._capacity = capacity
        memcpy(self._buf + self._size, data, size)
        self._size += size
        return 0

    def gets(self) -> Any:
        """The next complete reply, or ``False`` while it has not fully arrived."""
        self._check_idle()
        if self._error is not None:
            raise ProtocolError(self._error)
        self._busy = True
        try:
            reply = self._parse()
        except ProtocolError as exc:
            self._error = str(exc)
            self._drop(True)
            raise
        finally:
            self._busy = False
        if self._pos == self._size:
            self._drop(self._capacity > _KEEP_CAPACITY)
        return False if reply is _INCOMPLETE else reply

    cdef void _drop(self, bint release) noexcept:
        self._pos = self._size = self._scanned = 0
        if release:
            PyMem_Free(self._buf)
            self._buf = NULL
            self._capacity = 0

    cdef int _check_idle(self) except -1:
        # _parse holds a pointer into the buffer across Python calls (which may switch
        # threads or run a garbage-collector callback): a feed() then could free it under
        # us. The flag is read and set with no Python operation in between: atomic.
        if self._busy:
            raise RuntimeError("ReplyParser used while gets() is running (another thread?)")
        return 0

    cdef object _parse(self):
        cdef const char* buf = self._buf
        cdef const char* line
        cdef Py_ssize_t start, end, limit, length, after, i
        cdef long long count, size
        cdef unsigned char kind
        cdef list items
        while True:
            start = self._pos
            if start >= self._size:
                return _INCOMPLETE
            kind = <unsigned char>buf[start]
            limit = _line_limit(kind)
            if limit < 0:
                raise ProtocolError(f"unknown reply type byte {bytes([kind])!r}")
            end = _find_crlf(buf, start + 1 + self._scanned, self._size)
            if end < 0:
                length = self._size - start - 1
                if length > limit + 1 or (length > limit and buf[start + 1 + limit] != b"\r"):
                    raise ProtocolError(f"reply line longer than {limit} bytes")
                self._scanned = max(length - 1, 0)
                return _INCOMPLETE
            self._scanned = 0
            line = buf + start + 1
            length = end - start - 1
            if length > limit:
                raise ProtocolError(f"reply line longer than {limit} bytes")
            after = end + 2
            if kind in b"*%~>|":
                count = _length(line, length, "aggregate length", _MAX_ELEMENTS)
                if self._depth and self._kinds[self._depth - 1] == b"%":
                    if not self._remaining[self._depth - 1] % 2 and count >= 0:
                        raise ProtocolError("a map key cannot be a container")
                if count < 0:
                    value = None
                elif self._depth >= _MAX_DEPTH:
                    raise ProtocolError(f"reply nests deeper than {_MAX_DEPTH} containers")
                elif count == 0:
                    value = _close(kind, [])
                else:
                    self._kinds[self._depth] = kind
                    self._remaining[self._depth] = count * 2 if kind in b"%|" else count
                    self._items.append([])
                    self._depth += 1
                    self._pos = after
                    continue
            elif kind == b"$" or kind == b"=":
                size = _length(line, length, "bulk length", _MAX_BULK)
                if size < 0:
                    value = None
                else:
                    if self._size - after < size + 2:
                        return _INCOMPLETE
                    if buf[after + size] != b"\r" or buf[after + size + 1] != b"\n":
                        raise ProtocolError("bulk string not terminated by CRLF")
                    if kind == b"=":
                        if size < 4 or buf[after + 3] != b":":
                            raise ProtocolError("verbatim string without its format prefix")
                        value = PyBytes_FromStringAndSize(buf + after + 4, size - 4)
                    else:
                        value = PyBytes_FromStringAndSize(buf + after, size)
                    after += size + 2
            elif kind == b":":
                if not _parse_integer(line, length, &count):
                    raise ProtocolError(f"bad integer: {line[:length]!r}")
                value = PyLong_FromLongLong(count)
            elif kind == b"+" or kind == b"-":
                if memchr(line, b"\r", length) != NULL or memchr(line, b"\n", length) != NULL:
                    raise ProtocolError("CR or LF inside a status or error line")
                if kind == b"+":
                    value = PyBytes_FromStringAndSize(line, length)
                else:
                    value = reply_error(PyUnicode_DecodeUTF8(line, length, b"replace"))
            elif kind == b",":
                value = _double(line, length)
            elif kind == b"_":
                value = None
            elif kind == b"#":
                if line[0] == b"t" or line[0] == b"T":
                    value = True
                elif line[0] == b"f" or line[0] == b"F":
                    value = False
                else:
                    raise ProtocolError(f"bad boolean: {line[:length]!r}")
            else:  # "(": big number
                for i in range(1 if length and line[0] == b"-" else 0, length):
                    if not (b"0" <= line[i] <= b"9"):
                        raise ProtocolError(f"bad big number: {line[:min(length, 40)]!r}")
                value = PyBytes_FromStringAndSize(line, length)
            self._pos = after
            while self._depth:
                items = <list>self._items[self._depth - 1]
                items.append(value)
                self._remaining[self._depth - 1] -= 1
                if self._remaining[self._depth - 1]:
                    break
                self._depth -= 1
                self._items.pop()
                value = _close(self._kinds[self._depth], items)
            else:
                return value
