"""Market data: the port, the on-disk dataset format, the bundled and Alpaca sources."""
