"""Configuration: the schema (:mod:`.schema`), the strict table reader (:mod:`.table`) and
Centrifugo-style durations (:mod:`.durations`). Pure: nothing here opens a socket."""

from gateway.config.schema import *  # noqa: F403
from gateway.config.schema import __all__  # noqa: F401
