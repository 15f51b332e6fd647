"""Exceptions of the vidi client."""


class VidiError(Exception):
    """A request failed.

    ``code`` is the router's ERROR code (ipc/PROTOCOL.md §7): "bad_request",
    "bad_media", "bad_field", "overloaded", "no_worker", "worker_lost",
    "timeout", ... or one of the client's own:

    - "io": the socket failed (a send timed out: the router is not there or
      does not keep up),
    - "closed": the client was closed while the request was open,
    - "internal": a bug in this package.
    """

    def __init__(self, code: str, message: str = ""):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return "%s: %s" % (self.code, self.message) if self.message else self.code

    def __repr__(self):
        return "%s(%r, %r)" % (type(self).__name__, self.code, self.message)

    def __reduce__(self):
        return (_rebuild, (type(self), self.code, self.message))

    def _copy(self):
        """A fresh exception like this one (each raise gets its own traceback)."""
        return _rebuild(type(self), self.code, self.message)


class VidiTimeout(VidiError):
    """Nothing came for a request within the timeout (it was cancelled), or
    the router's deadline for the request passed (code "timeout")."""

    def __init__(self, message: str = ""):
        super().__init__("timeout", message)


def _rebuild(cls, code, message):
    e = cls.__new__(cls)
    VidiError.__init__(e, code, message)
    return e
