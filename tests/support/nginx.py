"""The marker for tests that run Debian's nginx."""

from __future__ import annotations

import pytest

from kubeserve.testing import nginx

requires_nginx = pytest.mark.skipif(
    nginx.NGINX is None,
    reason="nginx is not installed (apt-get install nginx): data-plane tests skipped",
)
