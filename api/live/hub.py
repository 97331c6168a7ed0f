"""This replica's WebSocket clients: each relayed frame is offered to every client's slot."""

from __future__ import annotations

from api.live.slot import Frame, LatestSlot


class ClientHub:
    """The local clients' slots. Offering is synchronous and never waits on a client.

    >>> hub = ClientHub()
    >>> slot = hub.join()
    >>> hub.publish(frame)    # every slot now holds it
    >>> hub.leave(slot)
    """

    def __init__(self) -> None:
        self._slots: set[LatestSlot] = set()
        self._closing_code: int | None = None

    def join(self) -> LatestSlot:
        """A slot for a new client; already closed if the hub is shutting down."""
        slot = LatestSlot()
        if self._closing_code is not None:
            slot.close(self._closing_code)
        self._slots.add(slot)
        return slot

    def leave(self, slot: LatestSlot) -> None:
        """Forget a client that has gone."""
        self._slots.discard(slot)

    def publish(self, frame: Frame) -> None:
        """Offer `frame` to every client; returns at once, whatever the clients' pace."""
        for slot in self._slots:
            slot.offer(frame)

    def close_all(self, code: int) -> None:
        """Ask every client, and every client that joins from now on, to close with `code`."""
        self._closing_code = code
        for slot in self._slots:
            slot.close(code)

    @property
    def count(self) -> int:
        """Connected clients."""
        return len(self._slots)
