"""The mail API for EHR systems and other programs: send, follow delivery, read and file mail
over HTTPS with JSON, as a clinician does in the webmail (docs/api.md).

It lives in the webmail app because it is the webmail's surface for programs: the same grants
decide who sees which mailbox (webmail/access.py), the same services write and audit
(webmail/services.py, webmail/sending.py). Requests authenticate with HTTP Basic and the
credentials of the submission and POP3 ports (hisp/smtp/credentials.py), never a session
cookie, so the webmail's CSRF protection has nothing to guard here; ``auth.api_view`` requires
a JSON or message body type instead, which no cross-site form can send.
"""
