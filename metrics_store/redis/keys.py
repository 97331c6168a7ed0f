"""Every Redis key and channel of metrics-store, spelled in one place.

All names begin with a hash tag in braces. On a single Redis (or through Sentinel) it is the
prefix, ``{metrics}``: every key of the store shares one slot, and a script may touch all of
them. On a Redis Cluster only the control and live keys keep ``{metrics}``; the data keys of
each shard sit under the shard's own tag, ``{metrics:<shard>}`` (`Keys.root`), one slot per
shard: a write touches one shard's data keys or the control keys, never both (a read on a
cluster node may span the slots it serves). Below, `{p}` stands for the tag that applies.

Data keys (they change only when something is recorded):

=================================  ===========  ==============================================
key                                type         holds
=================================  ===========  ==============================================
{p}:queries                        stream       raw query events, MAXLEN ~ stream_maxlen
{p}:routing                        stream       raw routing decisions, MAXLEN ~ stream_maxlen
{p}:q:<size>s:<start>              sorted set   query counters of one time bucket
{p}:r:<size>s:<start>              sorted set   routing counters of one time bucket
{p}:h:<fig>:<tier>:<size>s:<start> hash         latency histogram of one time bucket: bin -> count,
                                               "sum" -> total ms (fig: latency, ttft, queue, tpot)
{p}:q:recent:<tier>                list         the tier's newest queries, newest first
{p}:availability                   hash         "<node>:<tier>" -> "<available>/<total>"
{p}:buckets                        sorted set   every bucket key -> the epoch second it retires
{p}:changes                        stream       per batch, the counters it added and the bins
                                               it brings, with their keys (readers' caches,
                                               bucket_cache.py); bins reach the histogram
                                               hashes by a fold, within FOLD_AGE_MS
{p}:changes:head                   string       the change feed's newest entry id
{p}:changes:folded                 hash         the fold state: "id" (the newest entry whose
                                               bins the histogram hashes hold), "behind"
                                               (entries after it), "first" (the oldest of
                                               those); record/fold.lua
{p}:refused                        hash         node -> events refused for a clock off Redis's
{p}:deadletter                     stream       batches Redis refused for their content, with
                                               the error (MAXLEN ~ deadletter_maxlen)
{p}:totals                         sorted set   all-time counters (no expiry): "<counter>:<labels>"
{p}:totals:h:<fig>:<tier>          hash         all-time histogram (no expiry), latency and ttft
{p}:otlp:stream:<id>               string       an OTLP cumulative stream's last point: a
                                               token, then JSON (TTL history_s)
{p}:otlp:unmapped                  hash         "<metric> <attribute value>" -> OTLP data
                                               points that mapped to no tier
{p}:engines:seen:<id>              string       an engine whose counters a scraper took as its
                                               baseline (TTL history_s)
{p}:engines:failed                 hash         engine URL -> scrapes that failed (unreachable,
                                               an HTTP error, unreadable text)
{p}:engines:unmapped               hash         "<url> <family> <label value>" -> scraped series
                                               that mapped to no tier
=================================  ===========  ==============================================

Live keys (they change by themselves: heartbeats, locks, expiring snapshots):

=================================  ===========  ==============================================
{p}:live:nodes                     sorted set   node -> epoch seconds of its last heartbeat
{p}:live:snapshots                 hash         node -> JSON hardware snapshot
{p}:live:replicas                  sorted set   API replica -> epoch seconds of its last beat
{p}:live:connections               hash         API replica -> its WebSocket client count
{p}:live:tick:<second>             string       lock: the replica computing that second's update
{p}:live:latest                    string       the latest metrics_update, JSON bytes
{p}:live:updates                   channel      pub/sub: each metrics_update, JSON bytes
{p}:live:batch:<id>                string       a written collector batch, for idempotent retry
{p}:live:collectors                hash         "<node>:<pid>:<instance>" -> JSON counters
{p}:live:processes                 hash         "<node>:<pid>:<instance>" -> JSON loop health
=================================  ===========  ==============================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """The key names of one store, or of one of its shards, derived from its prefix.

    One property or method per key: the schema in code, so its size follows the schema's
    (docs/redis-schema.md), not a class that does many things.

    Data keys are spelled on `root`, control keys on `control_root`. Without a shard both are
    ``{prefix}`` (single Redis and Sentinel: one slot, as ever). A shard's `root` is
    ``{prefix:<shard>}``, another hash tag, so every data key, including any added later on
    `root`, lands on that shard's slot while the control keys stay in one place.
    """

    prefix: str
    shard: str | None = None

    @property
    def root(self) -> str:
        """Hash tag of the data keys: the shard's own, or the store's."""
        if self.shard is None:
            return self.control_root
        return "{" + self.prefix + ":" + self.shard + "}"

    @property
    def control_root(self) -> str:
        """Hash tag of the control and live keys, shared by every shard of the store."""
        return "{" + self.prefix + "}"

    # --- data ----------------------------------------------------------------------------
    @property
    def query_stream(self) -> str:
        return f"{self.root}:queries"

    @property
    def routing_stream(self) -> str:
        return f"{self.root}:routing"

    def query_bucket(self, size_s: int, start: int) -> str:
        return f"{self.root}:q:{size_s}s:{start}"

    def routing_bucket(self, size_s: int, start: int) -> str:
        return f"{self.root}:r:{size_s}s:{start}"

    def histogram_bucket(self, figure: str, tier: str, size_s: int, start: int) -> str:
        """One figure's histogram (metrics_store/histogram.py) for one tier and time bucket."""
        return f"{self.root}:h:{figure}:{tier}:{size_s}s:{start}"

    def recent_queries(self, tier: str) -> str:
        return f"{self.root}:q:recent:{tier}"

    @property
    def availability(self) -> str:
        return f"{self.control_root}:availability"

    @property
    def refused(self) -> str:
        return f"{self.control_root}:refused"

    @property
    def deadletter(self) -> str:
        return f"{self.control_root}:deadletter"

    @property
    def totals(self) -> str:
        return f"{self.root}:totals"

    def histogram_totals(self, figure: str, tier: str) -> str:
        """One figure's all-time histogram for one tier: the `/metrics` histograms."""
        return f"{self.root}:totals:h:{figure}:{tier}"

    @property
    def bucket_index(self) -> str:
        return f"{self.root}:buckets"

    @property
    def change_feed(self) -> str:
        """Which data keys each write changed: readers keep their contents until it names them."""
        return f"{self.root}:changes"

    @property
    def change_head(self) -> str:
        """The change feed's newest entry id: a reader's O(1) "nothing new" check."""
        return f"{self.root}:changes:head"

    @property
    def fold_state(self) -> str:
        """Which change-feed entries' histogram bins the histogram hashes hold (fold.lua)."""
        return f"{self.root}:changes:folded"

    def written_batch(self, batch_id: str) -> str:
        """A batch's idempotency marker: on the shard the batch is written to."""
        return f"{self.root}:live:batch:{batch_id}"

    # --- OTLP receiver ---------------------------------------------------------------------
    def otlp_stream(self, stream_id: str) -> str:
        """A cumulative OTLP stream's last point, that any replica takes the next from: on the
        shard its deltas are written to, as the ingest call that writes them moves it on."""
        return f"{self.root}:otlp:stream:{stream_id}"

    @property
    def otlp_unmapped(self) -> str:
        return f"{self.control_root}:otlp:unmapped"

    # --- engine scraper (control: beside the OTLP streams its cumulative points share) -----
    def engine_seen(self, engine_id: str) -> str:
        """Marks an engine whose counters a scraper has taken as its baseline."""
        return f"{self.control_root}:engines:seen:{engine_id}"

    @property
    def engines_failed(self) -> str:
        return f"{self.control_root}:engines:failed"

    @property
    def engines_unmapped(self) -> str:
        return f"{self.control_root}:engines:unmapped"

    # --- objectives (control: every process reads the one set) ----------------------------
    @property
    def slo_definitions(self) -> str:
        """The objectives as stored (field json) and their version (field version)."""
        return f"{self.control_root}:slo:definitions"

    @property
    def slo_states(self) -> str:
        """Each objective's state as the tick winners last saw it (a change is a notice)."""
        return f"{self.control_root}:slo:states"

    @property
    def slo_notices(self) -> str:
        """The webhook's outbox: one entry per state change, sent in order."""
        return f"{self.control_root}:slo:notices"

    @property
    def slo_webhook(self) -> str:
        """The webhook's progress: the last notice sent, the next try, the failures."""
        return f"{self.control_root}:slo:webhook"

    @property
    def slo_webhook_lease(self) -> str:
        """Held by the one replica sending notices now."""
        return f"{self.control_root}:slo:webhook:lease"

    # --- live (control) -------------------------------------------------------------------
    @property
    def live_nodes(self) -> str:
        return f"{self.control_root}:live:nodes"

    @property
    def snapshots(self) -> str:
        return f"{self.control_root}:live:snapshots"

    @property
    def replicas(self) -> str:
        return f"{self.control_root}:live:replicas"

    @property
    def connections(self) -> str:
        return f"{self.control_root}:live:connections"

    def tick_lock(self, tick: int) -> str:
        """The lock of one tick (epoch second): whoever sets it computes that update."""
        return f"{self.control_root}:live:tick:{tick}"

    @property
    def latest_update(self) -> str:
        return f"{self.control_root}:live:latest"

    @property
    def updates_channel(self) -> str:
        return f"{self.control_root}:live:updates"

    @property
    def collectors(self) -> str:
        return f"{self.control_root}:live:collectors"

    @property
    def processes(self) -> str:
        return f"{self.control_root}:live:processes"

    @property
    def scan_pattern(self) -> str:
        """Matches every key of this store, its shards' included (for SCAN on each node).

        Braces are literal in MATCH; ``[:}]`` takes both ``{prefix}:...`` and
        ``{prefix:<shard>}:...`` (a prefix holds no colon, so no other store's keys match).
        """
        return "{" + self.prefix + "[:}]*"


# Members of the bucket sorted sets. A member is "<counter>:<label>", so
# `ZRANGE <bucket> 0 -1 WITHSCORES` in redis-cli reads as a table.
QUERY_COUNT = "count"
QUERY_ERRORS = "errors"
QUERY_LATENCY_MS = "latency_ms"
# Queries that met every objective of their tier (counted by the collector as it writes them,
# only for tiers with objectives: docs/slo.md).
QUERY_GOOD = "good"
# The queries judged (the combined objectives' total: queries written before a tier had
# objectives, or sent as aggregates by OTLP and scrapes, are neither good nor bad).
QUERY_JUDGED = "judged"
# The figures with a histogram, and the field of a histogram hash holding its values' sum
# (the other fields are bin indexes).
FIGURE_LATENCY = "latency"
FIGURE_TTFT = "ttft"
FIGURE_QUEUE = "queue"
FIGURE_TPOT = "tpot"
FIGURES = (FIGURE_LATENCY, FIGURE_TTFT, FIGURE_QUEUE, FIGURE_TPOT)
# The figures kept for all time as well: the Prometheus histograms (api/prometheus.py). A
# latency objective on another figure has it kept too, from when a collector first judges
# with it (record/judge.py): its llm_slo_good_total counts from the all-time bins.
ALL_TIME_FIGURES = (FIGURE_LATENCY, FIGURE_TTFT)
HISTOGRAM_SUM = "sum"
# A histogram's field "err:<ppm>" -> values converted into its bins with that relative error
# on top of the bins' own (OTLP's coarser histograms: metrics_store/sources/otlp/convert.py).
HISTOGRAM_ERROR = "err:"
ROUTING_COUNT = "count"
ROUTING_SCORE = "score"
ROUTING_DECISION_MS = "decision_ms"
ROUTING_FALLBACKS = "fallbacks"
# Members of {p}:totals, the all-time counters behind /metrics (labels after the counter).
TOTAL_QUERIES = "queries"  # :<tier>:<error 0|1>
TOTAL_TOKENS = "tokens"  # :<tier>
TOTAL_LATENCY_MS = "latency_ms"  # :<tier>, the sum
TOTAL_ROUTING = "routing"  # :<complexity>:<tier>:<fallback 0|1>
TOTAL_GOOD = "good"  # :<tier>, queries that met every objective of their tier
TOTAL_JUDGED = "judged"  # :<tier>, queries judged against their tier's objectives


def member(counter: str, *labels: str) -> str:
    """The sorted-set member of a counter, e.g. member("count", "SIMPLE", "Q2")."""
    return ":".join((counter, *labels))
