"""Hide the secrets of URIs in text meant for people: userinfo and signature-like parameters.

Model URIs may be pre-signed (S3, GCS, Azure SAS) or carry a password; they end up in fetch's
output, in pod logs and in an InferenceService's status, which many more people can read.
Standard library only: the server image and the operator both use it.
"""

from __future__ import annotations

import re
import urllib.parse

REDACTED = "REDACTED"
# Query parameters that carry a secret: pre-signed URLs (S3, GCS, Azure SAS, OSS), OAuth, API
# keys. A name is secret when it is one of these or contains one of the fragments below.
_SECRET_PARAMETERS = {"sig", "key", "apikey", "api_key", "api-key", "auth", "passwd", "pwd"}
_SECRET_FRAGMENTS = ("signature", "credential", "token", "secret", "password", "accesskey")
_USERINFO_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
# A value ends at the next parameter, a space or a quote, or at ": " (a message goes on).
_PARAMETER_RE = re.compile(
    r"(?P<lead>[?&;#])(?P<name>[^=&;#?\s]+)=(?P<value>(?:[^&;#\s'\":]|:(?!\s|$))*)"
)


def _secret_parameter(name: str) -> bool:
    lowered = urllib.parse.unquote(name).lower()
    return lowered in _SECRET_PARAMETERS or any(f in lowered for f in _SECRET_FRAGMENTS)


def redact(text: str) -> str:
    """Hide the secrets of every URI in ``text``: userinfo and signature-like parameters.

    Works on a bare URI and on a message that quotes one (an exception's text), and never
    fails: what it cannot parse it leaves alone. ``https://u:p@h/m?X-Amz-Signature=abc&v=1``
    becomes ``https://REDACTED@h/m?X-Amz-Signature=REDACTED&v=1``.
    """
    text = _USERINFO_RE.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _PARAMETER_RE.sub(
        lambda m: f"{m['lead']}{m['name']}={REDACTED}" if _secret_parameter(m["name"]) else m[0],
        text,
    )
