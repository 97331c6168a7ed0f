"""A client's latest-wins slot: never more than one update waiting, whatever the client's pace."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class Frame:
    """One metrics_update as every client gets it: the published JSON, decoded to text once."""

    text: str
    timestamp: str  # ISO-8601 UTC, fixed width, so string order is time order

    @classmethod
    def from_payload(cls, payload: bytes | str) -> Frame:
        """Parse a published update; ValueError if it is not a metrics_update."""
        text = payload.decode() if isinstance(payload, bytes) else payload
        decoded = orjson.loads(text)
        timestamp = decoded.get("timestamp") if isinstance(decoded, dict) else None
        if not isinstance(timestamp, str):
            raise ValueError("not a metrics_update: no timestamp")
        return cls(text, timestamp)


class LatestSlot:
    """Holds the newest frame not yet taken; an older or repeated one is refused.

    Offering never blocks and never grows memory: a new frame replaces the waiting one, so a
    client that cannot keep up skips stale updates. Refusing frames not newer than the newest
    offered keeps each client's timestamps strictly increasing, whichever arrives first of the
    latest update read at connect time and the same update relayed by pub/sub.

    >>> slot = LatestSlot()
    >>> slot.offer(frame)
    >>> await slot.take()   # the frame, or None once closed
    """

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._newest = ""
        self._ready = asyncio.Event()
        self.close_code: int | None = None
        self.skipped = 0  # frames replaced before the client took them

    def offer(self, frame: Frame) -> bool:
        """Put `frame` in the slot unless it is not newer than the newest offered so far."""
        if self.close_code is not None or frame.timestamp <= self._newest:
            return False
        if self._frame is not None:
            self.skipped += 1
        self._newest = frame.timestamp
        self._frame = frame
        self._ready.set()
        return True

    async def take(self) -> Frame | None:
        """Wait for the next frame; None once the slot is closed."""
        await self._ready.wait()
        if self.close_code is not None:
            return None
        self._ready.clear()
        frame, self._frame = self._frame, None
        return frame

    def close(self, code: int) -> None:
        """Stop the client: its waiting take() returns None, and it should close with `code`."""
        if self.close_code is None:
            self.close_code = code
        self._frame = None
        self._ready.set()

    @property
    def pending(self) -> int:
        """Frames waiting: 0 or 1, never more."""
        return 0 if self._frame is None else 1
