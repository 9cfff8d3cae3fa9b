"""Errors the data plane raises, each carrying the HTTP status the transport should send.

The data plane knows nothing of HTTP, but every failure it reports has one natural status
code; keeping that code on the exception lets the transport stay a dumb mapping.
"""

import reprlib
from typing import Any


def brief(value: Any) -> str:
    """Show a client's value in a message, cut short: it may be megabytes of JSON."""
    return _SHORT.repr(value)


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()  # keyword arguments need 3.12
    short.maxlevel, short.maxlist, short.maxdict = 2, 3, 3
    short.maxstring = short.maxother = 30
    return short


_SHORT = _short_repr()


class ServerError(Exception):
    """A request failed; ``status`` is the code and ``str(self)`` the message for the client."""

    status = 500


class BadRequest(ServerError):
    """The request is malformed or does not fit the model (shape, datatype, fields)."""

    status = 400


class NotFound(ServerError):
    """The model, version, output or route does not exist."""

    status = 404


class MethodNotAllowed(ServerError):
    """The route exists but not for this HTTP method."""

    status = 405


class PayloadTooLarge(ServerError):
    """The body is larger than the configured limit."""

    status = 413


class NotReady(ServerError):
    """The model is loading, failed to load, or the server is draining."""

    status = 503


class ModelLoadError(Exception):
    """A model file could not be loaded (raised at start, not per request)."""
