"""When a request may leave: the pace (``pace``), lanes, outages, token estimates, the image gate,
the quota day, retries, quota stores shared across processes, and the cluster's budget."""
