"""The Direct security and trust agent: a pure library on bytes (no Django, no Celery)."""
