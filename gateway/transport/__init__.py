"""Client transports: WebSocket over picows (the only picows import)."""
