"""The aiohttp intake: thin HTTP edge over the domain core in shared/."""
