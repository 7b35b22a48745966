"""Ops tools behind the shardgate CLI."""
