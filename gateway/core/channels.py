"""The channel-name rule, in one place for every source of a channel name: client commands,
the server API, and the connection token's ``channels`` claim.

Names are printable ASCII without spaces, at most ``channel.max_length`` characters
(Centrifugo's default is 255); which namespace a name belongs to, and whether that
namespace exists, is the config's business (unknown namespace: error 102).
"""

from __future__ import annotations

from gateway.core.errors import ClientError

__all__ = ["ERROR_BAD_CHANNEL", "channel_name_valid", "check_channel_name"]

ERROR_BAD_CHANNEL = ClientError(107, "bad request: invalid channel name")


def channel_name_valid(name: str, max_length: int) -> bool:
    return 0 < len(name) <= max_length and name.isascii() and name.isprintable() and " " not in name


def check_channel_name(name: str, max_length: int) -> None:
    """Raises ClientError 107 for a name the rule refuses."""
    if not channel_name_valid(name, max_length):
        raise ERROR_BAD_CHANNEL
