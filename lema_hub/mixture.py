"""Deprecated import path: the stage module is `lema_hub.build`, named as `lema-hub` names the stage."""

from lema_hub._moved import forward

__getattr__ = forward(__name__, "lema_hub.build")
