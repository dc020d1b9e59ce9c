"""A local web for agents that needs no internet: the Python 3.11 docs (Debian's python3.11-doc) at
docs.python.org, a bm25s search API at search.ise.test and dumb-HTTP git repos at git.ise.test,
served by one loopback HTTP server that an egress proxy forwards those host names to."""

from services.web.cache import WebCache, cache_base, ensure_cache
from services.web.index import SearchIndex, SearchResult
from services.web.server import SEARCH_HOST, LocalWeb, served_hosts

__all__ = [
    "SEARCH_HOST",
    "LocalWeb",
    "SearchIndex",
    "SearchResult",
    "WebCache",
    "cache_base",
    "ensure_cache",
    "served_hosts",
]
