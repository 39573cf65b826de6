"""The one redaction of a secret: a Redis URL without its password, for config files,
logs, the metrics store and messages. Passwords come from the environment or the URL a
user gives, and are used, never written.

    public_url("redis://:s3cret@10.0.0.5:6379/0")   # 'redis://10.0.0.5:6379/0'
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def public_url(url: str) -> str:
    """``url`` without its password, fit for config files, logs and the metrics store."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    netloc = f"{user}{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
