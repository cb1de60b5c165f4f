"""The protocol core: every decision of the client, without I/O (no socket, thread, sleep or clock)."""
