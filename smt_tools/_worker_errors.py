"""One-line errors from DataLoader worker processes.

When a dataset raises in a DataLoader worker, PyTorch re-raises the same exception type in the
main process with a new message: "Caught RasterReadError in DataLoader worker process 0.",
"Original Traceback (most recent call last):" and the whole formatted traceback. The CLI
prints an :class:`~smt_tools.errors.SmtError` as one line, which made that a 1,700-character
line. :func:`unwrap_worker_errors` turns such an error back into the worker's own message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from smt_tools.errors import SmtError

_MARKER = "Original Traceback (most recent call last):"


def worker_message(exc: BaseException) -> str | None:
    """The original message of an exception re-raised by a DataLoader worker, else None.

    The formatted traceback ends with ``"<module>.<QualName>: <message>"`` (the last exception
    of the chain); the text after that prefix is the message.
    """
    text = str(exc)
    if not text.startswith("Caught ") or _MARKER not in text:
        return None
    tb = text.split(_MARKER, 1)[1]
    cls = type(exc)
    for prefix in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
        at = tb.rfind("\n" + prefix)
        if at >= 0:
            message = tb[at + 1 + len(prefix) :].strip()
            return message or None
    return None


@contextlib.contextmanager
def unwrap_worker_errors() -> Iterator[None]:
    """Re-raise an :class:`SmtError` from a DataLoader worker with the worker's own message
    (same type, one line). Other exceptions pass unchanged."""
    try:
        yield
    except SmtError as exc:
        message = worker_message(exc)
        if message is None:
            raise
        try:
            short = type(exc)(message)
        except Exception:  # a subclass with another constructor: keep torch's error
            raise exc from None
        raise short from None
