"""The I/O-free protocol core: every decision of the shells, as pure functions and plans."""
