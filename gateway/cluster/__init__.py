"""Inside one node: requests, notifications and surveys between workers over the bus, and the per-
worker control actions.
"""
