"""/routing aggregates: the 9-cell matrix, decision figures, availability over live nodes."""

from __future__ import annotations

from metrics_store.read.reader import MetricsReader
from metrics_store.read.shapes import RoutingMetrics
from tests.conftest import T0
from tests.harness import StoreHarness


def read_routing(store: StoreHarness) -> RoutingMetrics:
    return store.read(MetricsReader.routing)


def test_matrix_has_all_nine_cells_in_order_with_zeros(store: StoreHarness) -> None:
    routing = read_routing(store)
    cells = [(c.complexity, c.tier, c.count, c.avgScore) for c in routing.decisionMatrix]
    assert cells == [
        (cx, tier, 0, 0.0)
        for cx in ("SIMPLE", "MODERATE", "COMPLEX")
        for tier in ("Q2", "Q3", "Q4")
    ]
    accuracy = routing.accuracyMetrics
    assert (accuracy.totalDecisions, accuracy.avgDecisionTimeMs, accuracy.fallbackRate) == (
        0,
        0.0,
        0.0,
    )
    assert [(a.tier, a.available, a.total) for a in routing.modelAvailability] == [
        ("Q2", 0, 0),
        ("Q3", 0, 0),
        ("Q4", 0, 0),
    ]


def test_matrix_counts_scores_and_fallback_rate(store: StoreHarness) -> None:
    c = store.collector
    store.clock.set(T0)
    c.record_routing_decision("SIMPLE", "Q2", 1.0, 10.0)
    c.record_routing_decision("SIMPLE", "Q2", 2.0, 20.0)
    c.record_routing_decision("COMPLEX", "Q4", 9.5, 30.0)
    c.record_routing_decision("COMPLEX", "Q3", 8.0, 40.0, is_fallback=True)
    store.clock.advance(60)  # a later bucket of the same window
    c.record_routing_decision("MODERATE", "Q3", 5.25, 0.0)
    c.flush()

    routing = read_routing(store)
    cells = {(cell.complexity, cell.tier): cell for cell in routing.decisionMatrix}
    assert (cells["SIMPLE", "Q2"].count, cells["SIMPLE", "Q2"].avgScore) == (2, 1.5)
    assert (cells["COMPLEX", "Q4"].count, cells["COMPLEX", "Q4"].avgScore) == (1, 9.5)
    assert (cells["COMPLEX", "Q3"].count, cells["COMPLEX", "Q3"].avgScore) == (1, 8.0)
    assert (cells["MODERATE", "Q3"].count, cells["MODERATE", "Q3"].avgScore) == (1, 5.25)
    assert cells["SIMPLE", "Q4"].count == 0
    assert sum(cell.count for cell in routing.decisionMatrix) == 5
    assert routing.accuracyMetrics.totalDecisions == 5
    assert routing.accuracyMetrics.avgDecisionTimeMs == 20.0
    assert routing.accuracyMetrics.fallbackRate == 0.2


def test_decisions_leave_the_window(store: StoreHarness) -> None:
    store.clock.set(T0)
    store.collector.record_routing_decision("SIMPLE", "Q2", 1.0, 10.0)
    store.collector.flush()
    store.clock.advance(1800)
    assert read_routing(store).accuracyMetrics.totalDecisions == 0


def test_availability_sums_the_latest_report_of_each_live_node(store: StoreHarness) -> None:
    node_b = store.new_collector(node="node-b")
    store.clock.set(T0)
    store.collector.update_model_availability("Q2", 1, 3)
    store.collector.update_model_availability("Q2", 2, 3)  # the latest report wins
    store.collector.update_model_availability("Q4", 0, 1)
    node_b.update_model_availability("Q2", 2, 2)
    node_b.update_model_availability("Q3", 1, 2)
    store.collector.flush()
    node_b.flush()

    availability = [(a.tier, a.available, a.total) for a in read_routing(store).modelAvailability]
    assert availability == [("Q2", 4, 5), ("Q3", 1, 2), ("Q4", 0, 1)]


def test_availability_forgets_a_node_that_stopped_beating(store: StoreHarness) -> None:
    node_b = store.new_collector(node="node-b")
    store.clock.set(T0)
    node_b.update_model_availability("Q3", 2, 2)
    node_b.flush()
    node_b.close()
    # Liveness follows Redis's clock, not the writers' (moved years away here): node-b's last
    # beat, by Redis's clock, is made older than the TTL.
    beat = store.client.zscore(store.keys.live_nodes, "node-b")
    assert beat is not None
    store.client.zadd(
        store.keys.live_nodes, {"node-b": beat - store.settings.liveness.node_ttl_s - 1}
    )
    store.collector.update_model_availability("Q3", 1, 4)  # node-a beats now, node-b does not
    store.collector.flush()
    q3 = read_routing(store).modelAvailability[1]
    assert (q3.available, q3.total) == (1, 4)
