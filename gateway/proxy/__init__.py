"""Centrifugo proxy: connect, refresh, subscribe, publish, sub_refresh and rpc events sent to an
HTTP backend (:mod:`.messages` pure, :mod:`.service` the typed client, :mod:`.http` aiohttp)."""
