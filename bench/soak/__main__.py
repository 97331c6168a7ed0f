"""`python -m bench.soak [--minutes M] [--topology single|sentinel] [--acks N] [--seed S]`.

Exit status 0 only if no event is stored twice and every missing event was reported lost by
its process (and, with --acks above 0, no event counted as written is missing). The last
line of output is `SOAK-RESULT {json}` for scripts and the test.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

from bench.soak.run import Soak, SoakOptions


def parse(argv: list[str] | None) -> tuple[SoakOptions, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="recording time (default 5)")
    parser.add_argument("--topology", choices=("single", "sentinel"), default="single")
    parser.add_argument(
        "--acks", type=int, help="replica acknowledgements (default: 1 on Sentinel)"
    )
    parser.add_argument("--seed", type=int, help="fault schedule seed (default: random, printed)")
    parser.add_argument("--processes", type=int, default=3, help="collector processes (3)")
    parser.add_argument("--rate", type=float, default=50.0, help="events/s per process (50)")
    parser.add_argument("--keep", type=Path, help="work (and keep the logs) in this directory")
    args = parser.parse_args(argv)
    acks = args.acks if args.acks is not None else int(args.topology == "sentinel")
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    options = SoakOptions(args.minutes * 60, args.topology, acks, seed, args.processes, args.rate)
    return options, args.keep


def main(argv: list[str] | None = None) -> int:
    options, keep = parse(argv)
    if keep is not None:  # the servers' and collectors' logs stay for a post-mortem
        keep.mkdir(parents=True, exist_ok=True)
        result = Soak(options, keep).run()
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as root:
            result = Soak(options, Path(root)).run()
    print("SOAK-RESULT " + json.dumps(result), flush=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
