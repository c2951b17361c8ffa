#!/usr/bin/env python3
"""A worker that reports a job's progress to Herald with nothing but a Redis connection.

Python's standard library only: Redis's protocol (RESP) is spoken over a plain socket.

- Progress steps go out with PUBLISH on the Redis channel job_progress:JOB. Herald's Redis
  connector (PSUBSCRIBE job_progress:*) publishes each to the Herald channel of the same name.
  Redis pub/sub is at most once: a message published while Herald is not subscribed is gone
  (PUBLISH answers how many subscribers received it; 0 means nobody did).
- The last steps, the ones that must not be lost, are added to the stream `jobs` with XADD.
  Herald reads the stream as a consumer group and publishes every entry exactly once, also
  when it was down while the entry was added. The entry's `id` field makes a repeated XADD
  (a retry after a lost reply) publish once.

Each message sent is printed on stdout as a JSON line.

    REDIS_URL=redis://127.0.0.1:6379 python3 worker.py --job job_123
"""

import argparse
import json
import os
import socket
import ssl
import sys
import time
from datetime import datetime, timezone
from urllib.parse import unquote, urlparse

# (message, progress, how it is sent)
STEPS = [
    ("Fetching the source video", 0.10, "pubsub"),
    ("Probing streams", 0.20, "pubsub"),
    ("Rendering frame 250/1000", 0.35, "pubsub"),
    ("Rendering frame 500/1000", 0.50, "pubsub"),
    ("Rendering frame 750/1000", 0.65, "pubsub"),
    ("Rendering frame 1000/1000", 0.80, "pubsub"),
    ("Encoding audio", 0.90, "pubsub"),
    ("Uploading the result", 0.95, "stream"),
    ("Done", 1.00, "stream"),
]


class RedisError(Exception):
    pass


class Redis:
    """Just enough of a Redis client: send a command, read its reply."""

    def __init__(self, url):
        u = urlparse(url)
        if u.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis:// or rediss:// URL: {url}")
        sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=10)
        if u.scheme == "rediss":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=u.hostname)
        self.sock = sock
        self.reader = sock.makefile("rb")
        if u.password:
            auth = [unquote(u.username), unquote(u.password)] if u.username else [unquote(u.password)]
            self.command("AUTH", *auth)
        if u.path.strip("/"):
            self.command("SELECT", u.path.strip("/"))

    def command(self, *words):
        out = [b"*%d\r\n" % len(words)]
        for w in words:
            b = w if isinstance(w, bytes) else str(w).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self.reply()

    def reply(self):
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.reader.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RedisError(f"unexpected reply {line!r}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", default="job_123")
    parser.add_argument("--run", default=str(int(time.time() * 1000)), help="this run's id (one job may run again)")
    parser.add_argument("--delay", type=float, default=float(os.environ.get("WORKER_STEP_DELAY", "0.2")),
                        help="seconds between steps")
    args = parser.parse_args()
    redis = Redis(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379")
    channel = f"job_progress:{args.job}"

    for number, (message, progress, path) in enumerate(STEPS, start=1):
        last = number == len(STEPS)
        event = "job_done" if last else "job_progress"
        data = {
            "type": event,
            "jobId": args.job,
            "run": args.run,
            "step": number,
            "steps": len(STEPS),
            "progress": progress,
            "status": "done" if last else "processing",
            "message": message,
            "path": path,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        payload = json.dumps(data, separators=(",", ":"))
        sent = {"step": number, "via": path, "channel": channel, "event": event, "data": data}
        if path == "pubsub":
            # The connector names the event after the message's "type" field (event = "{data.type}").
            sent["receivers"] = redis.command("PUBLISH", channel, payload)
            if sent["receivers"] == 0:
                print(f"step {number}: nobody is subscribed to {channel}; this message is lost", file=sys.stderr)
        else:
            sent["entry"] = redis.command(
                "XADD", "jobs", "*",
                "channel", channel,
                "event", event,
                "data", payload,
                "id", f"{args.job}-{args.run}-{number}",
            )
        print(json.dumps(sent, separators=(",", ":")), flush=True)
        if not last:
            time.sleep(args.delay)


if __name__ == "__main__":
    main()
