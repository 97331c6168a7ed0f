"""Private redis-servers that ask for a password, an ACL user, or TLS, for the security tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

from workers.redis_process import RedisServerProcess, free_port

PASSWORD = "pw-N0t-in-any-log-7f3a9c"
ACL_USER = "metrics-app"

# The least a store process (collector, API replica, sampler) needs, as docs/security.md lists
# it: its own keys, the rq queues read-only (threadPoolStatus), its own channels, and these
# commands, the Lua scripts' included (ACLs check those too). tests/test_security_redis.py
# runs the whole store under this rule, so a command added to the code without being added
# here (and to the docs) fails that test.
STORE_COMMANDS = (
    "+ping +hello +select +info "
    "+evalsha +script|load +multi +exec +time +exists "
    "+get +set +del +expire +hset +hget +hmget +hincrby +hincrbyfloat +hgetall +hdel "
    "+lpush +ltrim +lrange +llen "
    "+xadd +xrange +xdel "
    "+zadd +zincrby +zrange +zrangebyscore +zremrangebyscore +zrem +zcount +zscore +type "
    "+publish +subscribe +unsubscribe"
)


def acl_rule(prefix: str) -> str:
    """The ACL rule of a store user (password PASSWORD) for the keys of `prefix`."""
    keys = f"resetkeys ~{{{prefix}}}:* %R~rq:*"
    channels = f"resetchannels &{{{prefix}}}:live:*"
    return f"on >{PASSWORD} {keys} {channels} -@all {STORE_COMMANDS}"


def password_server(data_dir: Path) -> RedisServerProcess:
    """`--requirepass`: the default user with a password."""
    port = free_port()
    return RedisServerProcess(
        data_dir,
        port,
        extra_args=("--requirepass", PASSWORD),
        url=f"redis://:{quote(PASSWORD)}@127.0.0.1:{port}/0",
    )


def acl_server(data_dir: Path, prefix: str) -> RedisServerProcess:
    """An ACL user with the store's least privileges; the default user switched off."""
    port = free_port()
    return RedisServerProcess(
        data_dir,
        port,
        # One argument per word: redis-server would read a quoted rule as a user name.
        extra_args=("--user", "default", "off", "--user", ACL_USER, *acl_rule(prefix).split()),
        url=f"redis://{ACL_USER}:{quote(PASSWORD)}@127.0.0.1:{port}/0",
    )


def tls_supported() -> bool:
    """Whether redis-server links OpenSSL (Debian's does), and openssl can make certificates."""
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None or shutil.which("ldd") is None:
        return False
    linked = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    return "libssl" in linked.stdout


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        f"req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout {ca_key} -out {ca}",
        f"req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout {key} -out {csr}",
        f"x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 1 "
        f"-extfile {ext} -out {cert}",
    ):
        subprocess.run(["openssl", *command.split()], check=True, capture_output=True)
    return ca, cert, key


def tls_server(data_dir: Path) -> RedisServerProcess:
    """TLS only (no plain port), with a password too; clients verify the server's certificate."""
    ca, cert, key = make_certificates(data_dir / "tls")
    port = free_port()
    tls_args = (
        "--port", "0", "--tls-port", str(port), "--requirepass", PASSWORD,
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
    )  # fmt: skip
    return RedisServerProcess(
        data_dir,
        port,
        extra_args=tls_args,
        url=f"rediss://:{quote(PASSWORD)}@127.0.0.1:{port}/0"
        f"?ssl_cert_reqs=required&ssl_ca_certs={ca}",
    )
