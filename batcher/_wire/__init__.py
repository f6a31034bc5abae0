"""How a request reaches a provider: each wire format (``providers``), the transports (the lean
HTTP/1.1 client, aiohttp, the httpx seam) and the endpoint (URL, key, the embedded mock)."""
