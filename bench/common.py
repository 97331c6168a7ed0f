"""What every benchmark shares: repeated runs summarised, a private Redis, tables, JSON results."""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workers.redis_process import RedisServerProcess

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Summary:
    """The median of several runs, with their spread."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values), len(values))

    def show(self, digits: int = 0) -> str:
        return f"{self.median:,.{digits}f} [{self.low:,.{digits}f}-{self.high:,.{digits}f}]"


def repeat(runs: int, measure: Callable[[], float]) -> Summary:
    return Summary.of([measure() for _ in range(runs)])


@dataclass
class Table:
    """A printed table whose rows also go to the JSON results."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(cell) for cell in cells])

    def render(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.columns, *self.rows]) for i in range(len(self.columns))
        ]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
        out = [f"\n## {self.title}", line(self.columns), line(["-" * w for w in widths])]
        return "\n".join(out + [line(row) for row in self.rows])


@contextmanager
def private_redis(*extra_args: str) -> Iterator[RedisServerProcess]:
    """A redis-server of the benchmark's own on a free port, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        server = RedisServerProcess(Path(tmp), extra_args=extra_args)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def progress(message: str) -> None:
    print(f"  .. {message}", flush=True)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2, default=_plain))
    return path


def _plain(value: object) -> object:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)  # type: ignore[call-overload]
    raise TypeError(f"cannot serialise {type(value).__name__}")


@contextmanager
def tree_at(revision: str, *paths: str) -> Iterator[Path]:
    """`paths` of the repository as of `revision`, unpacked into a temporary directory (`git
    archive`: the repository's own worktrees and index stay untouched)."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="bench-tree-") as tmp:
        archive = Path(tmp) / "tree.tar"
        command = ["git", "-C", str(root), "archive", f"--output={archive}", revision, *paths]
        subprocess.run(command, check=True)
        subprocess.run(["tar", "-x", "-f", str(archive), "-C", tmp], check=True)
        yield Path(tmp)
