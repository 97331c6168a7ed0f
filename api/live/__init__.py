"""The live stream: one update a second for the whole cluster, relayed to every WebSocket client.

    ticker.py   each second, the replica that wins the tick's lock computes and publishes
    relay.py    each replica's one subscriber, handing every published update to the hub
    hub.py      this replica's clients, one latest-wins slot each
    slot.py     the slot: holds at most one update, so a slow client skips stale ones
    client.py   one WebSocket client: first update at once, then each relayed one
    stream.py   the parts above plus the replica's heartbeat, started by the app lifespan

docs/live-stream.md explains the design.
"""

from api.live.stream import LiveStream

__all__ = ["LiveStream"]
