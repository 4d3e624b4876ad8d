"""A second worker process for the near-cache tests: the production discovery cache
(``hisp.discovery_redis.redis_cache``) driven by JSON lines on stdin, one answer line each.

    python -m tests.hisp.discovery.near_worker REDIS_URL PREFIX

Commands: ``{"op": "get", "name": ...}`` answers the stored notes or null; ``{"op": "put",
"name": ..., "note": ..., "ttl": ...}`` and ``{"op": "flush", "entry": ...}`` answer "ok".
Every entry lives under the domain ``near.test`` as a DNS answer.
"""

from __future__ import annotations

import json
import sys

from agent.discovery import CachePolicy
from agent.discovery.found import Found, Outcome
from hisp.discovery_redis import redis_cache

DOMAIN = "near.test"


def main(url: str, prefix: str) -> None:
    cache = redis_cache(url, policy=CachePolicy(), prefix=prefix)
    strict = redis_cache(url, policy=CachePolicy(), prefix=prefix, strict=True)
    for line in sys.stdin:
        command = json.loads(line)
        answer: object = "ok"
        if command["op"] == "get":
            found = cache.get(domain=DOMAIN, kind="dns", name=command["name"])
            answer = None if found is None else list(found.notes)
        elif command["op"] == "put":
            found = Found(Outcome.FOUND, notes=(command["note"],), ttl=command["ttl"])
            cache.put(domain=DOMAIN, kind="dns", name=command["name"], found=found)
        elif command["op"] == "flush":
            strict.flush(command["entry"])
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
