"""Put an encoded batch into Redis: sent now and confirmed later, or written and confirmed now.

Sending a batch and reading its reply only after the next batch is encoded overlaps Python's
encoding with Redis's execution. That needs one held connection to one server, and a batch
whose primary reply is enough: where replicas must acknowledge it (`replica_ack`) or the store
is a cluster, each batch is written and confirmed in one go.
"""

from __future__ import annotations

import redis

from metrics_store.record.batch import EncodedBatch
from metrics_store.redis.replica_ack import acks_wanted, write_batch
from metrics_store.redis.script_sender import ScriptSender
from metrics_store.redis.scripts import INGEST, lua_script
from metrics_store.redis.topology import Topology


class BatchWriter:
    """The ingest script's calls for one flusher."""

    def __init__(self, client: redis.Redis, topology: Topology) -> None:
        self._client = client
        self._topology = topology
        self._ingest = lua_script(INGEST)
        pipelined = topology.pipelined_sends and not acks_wanted(topology.settings)
        self._sender = ScriptSender(client, self._ingest) if pipelined else None
        self.on_wire = False  # a sent call awaits its reply on the sender's connection

    def send(self, encoded: EncodedBatch) -> bool:
        """Send the batch, to be confirmed later; False if this writer confirms at once
        (then `write` it). Raises a RedisError if the send failed."""
        if self._sender is None:
            return False
        self._sender.send(encoded.keys, encoded.args)  # one call: its control part is in it
        self.on_wire = True
        return True

    def confirm(self) -> None:
        """Read the sent batch's reply; raises what Redis answered."""
        assert self._sender is not None  # only batches sent by it are confirmed here
        self.on_wire = False
        self._sender.receive()

    def write(self, encoded: EncodedBatch) -> object:
        """Write a batch and wait for its reply: its shard's call, then its control call.
        Returns the first call's reply (-1: the batch's id marker was there)."""
        reply = write_batch(self._client, self._ingest, encoded.keys, encoded.args, self._topology)
        if encoded.control is not None:
            control = encoded.control
            write_batch(self._client, self._ingest, control.keys, control.args, self._topology)
        return reply

    def discard(self) -> None:
        """After a failure: the held connection's protocol state is unknown; drop it."""
        self.on_wire = False
        if self._sender is not None:
            self._sender.discard()
