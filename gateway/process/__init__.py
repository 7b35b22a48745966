"""Processes: the supervisor (fork, reap, signals), the worker main, systemd notify."""
