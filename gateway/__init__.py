"""The aiohttp gateway: authentication, REST commands and queries, the WebSocket relay, the console.

The only package that imports `aiohttp.web`.
"""
