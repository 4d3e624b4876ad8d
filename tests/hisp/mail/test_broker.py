"""hisp.broker: kombu's Redis transport with one client per channel, against the real Redis."""

from __future__ import annotations

import uuid

from kombu import Connection

from hisp import broker
from tests.support.services import redis_url


def test_redis_urls_use_our_transport_and_messages_still_flow() -> None:
    queue = f"hisp-broker-test-{uuid.uuid4().hex[:8]}"
    with Connection(redis_url()) as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker.Channel)
        assert channel._create_client() is channel._create_client()  # noqa: SLF001
        assert channel._create_client(asynchronous=True) is not channel._create_client()  # noqa: SLF001
        simple = connection.SimpleQueue(queue)
        try:
            for n in range(3):
                simple.put({"pk": n})
            got = []
            for _ in range(3):
                message = simple.get(timeout=5)
                got.append(message.payload["pk"])
                message.ack()
            assert got == [0, 1, 2]
        finally:
            simple.queue.delete()
            simple.close()


def test_a_closed_channel_forgets_its_client() -> None:
    with Connection(redis_url()) as connection:
        channel = connection.channel()
        client = channel._create_client()  # noqa: SLF001
        channel.close()
        assert channel._sync_client is None  # noqa: SLF001
        assert client is not None
