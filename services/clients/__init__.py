"""Clients of the ISE-Trace gRPC APIs (``episodes``: drive episodes as an external agent)."""
