"""The string patterns of the API, each with the sentence that explains it to a user.

The CRD carries the patterns (the API server checks them); the operator's errors carry the
explanations, since a regular expression is a poor error message.
"""

from __future__ import annotations

STORAGE_URI = r"^(file|pvc|https?|s3|gs)://\S+$"
# Header and cookie names end up in nginx variable names and map regexes, so they are held
# to the characters every proxy handles the same way.
HEADER_NAME = r"^[A-Za-z0-9][A-Za-z0-9-]*$"
COOKIE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MIG_PROFILE = r"^[1-7]g\.[0-9]+gb(\+me)?$"
IMAGE = r"^[^\s]+$"
PERCENT = r"^(100|[1-9]?[0-9])%$"
SHA256 = r"^[0-9a-f]{64}$"
ENV_NAME = r"^[^=]+$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

EXPLANATIONS = {
    STORAGE_URI: "must be a file://, pvc://, http(s)://, s3:// or gs:// URI",
    HEADER_NAME: "must be an HTTP header name of letters, digits and '-', e.g. x-user-id",
    COOKIE_NAME: "must be a cookie name of letters, digits, '_', '.' and '-'",
    MIG_PROFILE: "must be a MIG profile such as 1g.5gb, 3g.20gb or 1g.10gb+me",
    IMAGE: "must be a container image reference without spaces",
    PERCENT: "must be a percentage from 0% to 100%",
    SHA256: "must be 64 lowercase hexadecimal digits",
    ENV_NAME: "must not contain '='",
    DNS1123_LABEL: "must be a DNS-1123 label: lowercase letters, digits and '-'",
    DNS1123_SUBDOMAIN: "must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.'",
    DURATION: "must be a duration such as 250ms, 30s, 1m30s or 2h",
}
