"""The server API: a transport-free executor and its HTTP glue (the only aiohttp import)."""
