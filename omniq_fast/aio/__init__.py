"""The asyncio side of omniq-fast: the same roles as the blocking API, as coroutines."""
