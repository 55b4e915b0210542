"""The operator console: server-rendered pages at ``/`` for failed messages, replays and lookups.

Operators log in with their admin credentials (checked by user_service); the session lives in
Redis behind a signed, HttpOnly, SameSite=Strict cookie, and every form that changes something
carries the session's CSRF token. Pages call the same domain code as the REST API.
"""
