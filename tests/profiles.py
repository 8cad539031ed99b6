"""The sandbox's profiles as the tests name them.

The Python API's default (``SandboxConfig.default()``: no profile) is lenient; a test or fixture
that relies on lenient behaviour (synchronous notifications, refunds without the client certificate
in-process, no CNY pool...) says so by passing :data:`LENIENT`. :data:`STRICT` is what
``minipay sandbox``, ``minipay serve`` and ``minipay demo`` run; :data:`STRICT_IN_PROCESS` is
strict without mutual TLS, which an in-process ASGI transport cannot carry.
"""

from __future__ import annotations

from minipay.sandbox import SandboxConfig

__all__ = ["LENIENT", "STRICT", "STRICT_IN_PROCESS"]

LENIENT = SandboxConfig.default().with_profile("lenient")
STRICT = SandboxConfig.default().with_profile("strict")
STRICT_IN_PROCESS = STRICT.replace(tls={"require_client_cert": False})
