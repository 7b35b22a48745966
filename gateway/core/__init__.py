"""The pure core: errors with protocol codes, the typed model, history and recovery math, subscription
planning, limits. No sockets, no event loop.
"""
