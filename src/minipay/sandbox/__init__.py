"""A faithful, stateful local simulator of WeChat Pay Global v2 (institution mode) and Mini
Program login, for tests and development. Imports ``minipay.protocol`` only.

>>> from minipay.sandbox import create_app, SandboxConfig
>>> app = create_app(SandboxConfig.default(), seed=7)

See ``docs/sandbox.md`` for the control API, faults and the config file.
"""

from __future__ import annotations

from minipay.sandbox._app import create_app
from minipay.sandbox._backend import Backend
from minipay.sandbox._clock import VirtualClock
from minipay.sandbox._config import (
    ClockConfig,
    Institution,
    NotifyConfig,
    RulesConfig,
    SandboxConfig,
    SubMerchant,
    TLSConfig,
)
from minipay.sandbox._notifier import is_ack
from minipay.sandbox._persist import load_state, save_state
from minipay.sandbox._server import RunningServer, build_server, running
from minipay.sandbox._tls import SandboxH11Protocol, TLSMaterial, generate_tls_material, load_or_generate_tls_material

__all__ = [
    "Backend",
    "ClockConfig",
    "Institution",
    "NotifyConfig",
    "RulesConfig",
    "RunningServer",
    "SandboxConfig",
    "SandboxH11Protocol",
    "SubMerchant",
    "TLSConfig",
    "TLSMaterial",
    "VirtualClock",
    "build_server",
    "create_app",
    "generate_tls_material",
    "is_ack",
    "load_or_generate_tls_material",
    "load_state",
    "running",
    "save_state",
]
