#!/usr/bin/env bash
# GPU check: run `metrics-store sampler` on this machine for a few seconds against a private
# Redis, then print the snapshot it stored beside nvidia-smi's own figures.
#
#   bash scripts/gpu_check.sh            # from the repository root; about 30 s, at most 2 min
#
# It installs the package into a fresh virtual environment (with the system's packages visible).
# On a machine that cannot reach a package index, first run scripts/gpu_check_wheels.sh where
# pip works and bring the .whl/ folder along: the install then reads only from it.
# Redis: a private redis-server on a free loopback port if one is on PATH, else fakeredis
# through the package's own embedded server. Nothing touches any other Redis.
set -euo pipefail

PYTHON=${PYTHON:-python3}
SAMPLE_S=${SAMPLE_S:-5}
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
VENV=$WORK/venv
trap 'rm -rf "$WORK"' EXIT

[ -f pyproject.toml ] && [ -d workers ] || { echo "run me from the repository root" >&2; exit 2; }

echo "== install into $VENV"
timeout 60 "$PYTHON" -m venv --system-site-packages "$VENV"
if [ -d .whl ]; then
  timeout 120 "$VENV/bin/pip" install -q --no-index --find-links .whl -e '.[sampler,embedded]'
else
  timeout 120 "$VENV/bin/pip" install -q -e '.[sampler,embedded]'
fi

echo "== sample for ${SAMPLE_S} s"
# The sampler runs as its own process, exactly as `metrics-store sampler` runs on a node; this
# helper only hosts Redis and reads back what the sampler wrote.
timeout 60 env SAMPLE_S="$SAMPLE_S" "$VENV/bin/python" - <<'PY'
import json, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

import redis

from metrics_store.redis.keys import Keys
from metrics_store.read.resources import resource_metrics
from metrics_store.live.snapshots import NodeSnapshot
from workers.redis_process import FakeRedisServer, RedisServerProcess

if shutil.which("redis-server"):
    server = RedisServerProcess(Path(tempfile.mkdtemp(prefix="gpu-check-redis-")))
    kind = "redis-server"
else:
    server, kind = FakeRedisServer(), "fakeredis (no redis-server on PATH)"
server.start()
print(f"Redis: {kind} at {server.url}", flush=True)
node = "gpu-check"
env = {**os.environ, "REDIS_URL": server.url, "METRICS_KEY_PREFIX": "gpucheck",
       "METRICS_NODE": node, "PYTHONUNBUFFERED": "1"}
sampler = subprocess.Popen([sys.executable, "-m", "workers.cli", "sampler"], env=env)
try:
    time.sleep(float(os.environ["SAMPLE_S"]))
finally:
    sampler.send_signal(signal.SIGTERM)
    code = sampler.wait(15)
keys = Keys("gpucheck")
client = redis.Redis.from_url(server.url)
raw = client.hget(keys.snapshots, node)
client.close()
server.stop()
print(f"sampler exit status {code}")
if raw is None:
    sys.exit("FAIL: no snapshot was stored")
snapshot = NodeSnapshot.model_validate_json(raw)
print("\n-- stored snapshot (raw units: bytes, MB/s) --")
print(json.dumps(json.loads(raw), indent=1))
view = resource_metrics([snapshot], connections=0)
shown = view.nodes[0].gpus
print("\n-- as /api/metrics/resources shows it (GiB) --")
print("vram:", view.vram.model_dump_json(), " cpu:", view.cpu.model_dump_json())
print("\n-- per GPU, in nvidia-smi's units --")
print("index, name, memory.used [MiB], memory.total [MiB], utilization.gpu [%], "
      "temperature.gpu, power.draw [W]")
for gpu in snapshot.gpus:
    print(f"{gpu.index}, {gpu.name}, {gpu.memory_used_bytes / 2**20:.0f},"
          f" {gpu.memory_total_bytes / 2**20:.0f}, {gpu.utilization_percent}, {gpu.temperature_c},"
          f" {gpu.power_w}")
print("as the API shows them:", [g.model_dump() for g in shown])
if not snapshot.gpus:
    print("(none: no NVML library, no driver or no GPU; the sampler reported zeros)")
print(f"exact VRAM bytes: used {snapshot.vram_used_bytes} of {snapshot.vram_total_bytes}"
      f" = {snapshot.vram_used_bytes / 2**20:.1f} of {snapshot.vram_total_bytes / 2**20:.1f} MiB")
if code != 0:
    sys.exit(f"FAIL: the sampler exited with status {code} on SIGTERM")
PY

echo
echo "== nvidia-smi"
if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 30 nvidia-smi \
    --query-gpu=index,name,memory.used,memory.total,utilization.gpu,temperature.gpu,power.draw \
    --format=csv
  timeout 30 nvidia-smi --query-gpu=driver_version,memory.reserved --format=csv || true
else
  echo "no nvidia-smi on this machine"
fi
