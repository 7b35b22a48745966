"""Configuration: the schema (:mod:`.schema`) and its reader (:mod:`.parse`), loading files and the development default
(:mod:`.loader`), the strict table reader (:mod:`.table`), Centrifugo's key table
(:mod:`.keys`), the engine and admin sections, and durations. Pure: nothing here opens a socket."""

from gateway.config.loader import *  # noqa: F403
from gateway.config.loader import __all__ as _loader_all
from gateway.config.parse import *  # noqa: F403
from gateway.config.parse import __all__ as _parse_all
from gateway.config.schema import *  # noqa: F403
from gateway.config.schema import __all__ as _schema_all

__all__ = [*_schema_all, *_parse_all, *_loader_all]
