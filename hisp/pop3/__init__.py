"""POP3 retrieval for hosted users' mail clients and EHR systems (RFC 1939, RFC 2449 CAPA,
RFC 5034 AUTH PLAIN), over implicit TLS only (POP3S, RFC 8314): the edge protocol of the
Direct Project's full-service model, where the HISP decrypts and verifies and the edge
client reads plain mail.

Written by hand on asyncio streams: there is no well-kept Python POP3 server library to build
on (the standard library has only a client, ``poplib``). The pieces:

- ``server.py``: the listener (TLS, session bounds, its own thread and event loop);
- ``session.py``: one session, its states, commands and limits;
- ``maildrop.py``: the database side (who may read which INBOX, auditing, Trash at QUIT);
- ``render.py``: a stored message as the client receives it.

Started by ``manage.py runsmtp --pop3-port`` (or ``HISP_POP3_PORT``) beside the SMTP listeners.
"""
