"""The engine seam (Broker, PresenceManager) and its implementations: memory (per-core owners over
ZeroMQ) and Redis (several nodes).
"""
