"""Publication of our certificates in DNS: the zone data built from the database
(``records``), the answer logic (``responder``) and the asyncio UDP/TCP server (``server``)."""
