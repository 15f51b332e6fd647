"""What the synchronous and the asyncio request have in common: the state of
one request as its events come in. The subclasses add the waiting."""

import time
from collections import deque
from typing import Optional

from ._wire import Answer
from .errors import VidiError, VidiTimeout

# After cancel(), how long to wait for the router's DONE "cancelled" before
# ending the request here (the router answers at once when it is there).
CANCEL_GRACE_S = 5.0


class RequestBase:
    """One request: the text deltas not yet taken, and how it ended."""

    def __init__(self, rid: int, timeout: Optional[float]):
        self.id = rid
        self._timeout = timeout
        self._deltas = deque()
        self._streamed = []
        self._n_tokens = 0
        self._answer: Optional[Answer] = None
        self._error: Optional[VidiError] = None
        self._finished = False
        self._t0 = self._last_event = time.monotonic()
        self._cancel_at: Optional[float] = None

    # -- the event side (called by the client's receiver; the subclass locks and notifies) --

    def _on_token(self, text, n_tokens):
        if self._finished:
            return
        self._last_event = time.monotonic()
        self._n_tokens += n_tokens
        if text:
            self._streamed.append(text)
            self._deltas.append(text)

    def _on_done(self, answer: Answer):
        if self._finished:
            return
        streamed = "".join(self._streamed)
        # what DONE has beyond the streamed deltas (the whole text when not
        # streaming; UTF-8 the router held back until the end) is the last delta
        if len(answer.text) > len(streamed) and answer.text.startswith(streamed):
            tail = answer.text[len(streamed):]
            self._streamed.append(tail)
            self._deltas.append(tail)
        self._answer = answer
        self._finished = True

    def _on_error(self, error: VidiError):
        if self._finished:
            return
        self._error = error
        self._finished = True

    def _on_cancelled_here(self):
        """End a cancelled request without the router's word (it did not answer,
        or the CANCEL could not be sent)."""
        self._on_done(Answer(text="".join(self._streamed), finish="cancelled", tokens=self._n_tokens,
                             prompt_tokens=0, cache_hits=0, total_s=time.monotonic() - self._t0))

    def _deadline(self) -> Optional[float]:
        """When the receiver must act on this request if nothing comes: its
        timeout, or the end of the grace after cancel()."""
        d = None
        if self._timeout is not None:
            d = self._last_event + self._timeout
        if self._cancel_at is not None:
            c = self._cancel_at + CANCEL_GRACE_S
            d = c if d is None else min(d, c)
        return d

    def _expired(self, now):
        """('cancelled' | 'timeout' | None): what the deadline means now."""
        if self._cancel_at is not None and now >= self._cancel_at + CANCEL_GRACE_S:
            return "cancelled"
        if self._timeout is not None and now >= self._last_event + self._timeout:
            return "timeout"
        return None

    def _timeout_error(self):
        return VidiTimeout("request %d: nothing came for %g s; it was cancelled" % (self.id, self._timeout))

    def _outcome(self) -> Answer:
        if self._error is not None:
            raise self._error._copy()
        return self._answer

    # -- public, read-only --

    def done(self) -> bool:
        """Whether the request has ended (answered, failed or cancelled)."""
        return self._finished

    @property
    def text(self) -> str:
        """The text streamed so far (the whole answer once done)."""
        if self._answer is not None:
            return self._answer.text
        return "".join(self._streamed)

    def __repr__(self):
        state = "open"
        if self._error is not None:
            state = "failed (%s)" % self._error.code
        elif self._answer is not None:
            state = "done (%s)" % self._answer.finish
        return "<%s id=%d %s>" % (type(self).__name__, self.id, state)
