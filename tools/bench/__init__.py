"""``shardgate bench``: a multi-process load generator for shardgate and its peers (see cli.py)."""
