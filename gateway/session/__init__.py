"""One client connection: the session state machine, its command handlers, server-side subscriptions and RPC."""
