"""``python -m services.web``: build the local web's cache (the default), ``serve`` it in the
foreground, ``search`` it from the command line, or list the ``hosts`` it serves."""

from __future__ import annotations

import argparse
import json
import sys
import time

from services.common.logs import setup_logging
from services.web.cache import ENV_CACHE_DIR, WebCache, ensure_cache
from services.web.corpus import BASE_URL
from services.web.gitrepos import clone_url
from services.web.index import MAX_COUNT
from services.web.server import SEARCH_HOST, LocalWeb, served_hosts


def _describe(cache: WebCache) -> str:
    repos = "\n".join(f"    git clone {clone_url(name)}" for name in cache.repos)
    return (
        f"local web cache: {cache.root} ({'built now' if cache.built_now else 'already built'}, "
        f"build took {cache.manifest['build_seconds']}s)\n"
        f"  {BASE_URL}...  {cache.manifest['pages']} indexed pages of {cache.doc_root}\n"
        f"  http://{SEARCH_HOST}/search?q=<words>&count=<1-{MAX_COUNT}>  bm25s search over those pages\n"
        f"  git repositories (dumb HTTP, read-only):\n{repos}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.web",
        description=f"The local web for agents: {', '.join(served_hosts())}. With no command, build the "
        f"cache (once; under ${ENV_CACHE_DIR} or ~/.cache/ise/web) and print what is served.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("build", help="build the cache if missing and print what is served (the default)")
    serve = sub.add_parser("serve", help="serve in the foreground until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port to bind (default: 0, a free port)")
    search = sub.add_parser("search", help="search the index and print the JSON the search API returns")
    search.add_argument("query")
    search.add_argument("--count", type=int, default=5, choices=range(1, MAX_COUNT + 1), metavar=f"1-{MAX_COUNT}")
    sub.add_parser("hosts", help="print the host names served, one a line (for the egress proxy)")
    args = parser.parse_args(argv)
    setup_logging("web")

    if args.command == "hosts":
        print("\n".join(served_hosts()))
        return 0
    cache = ensure_cache()
    if args.command == "search":
        started = time.perf_counter()
        results = cache.index.search(args.query, args.count)
        print(
            json.dumps({"query": args.query, "results": [r.as_json() for r in results]}, indent=1, ensure_ascii=False)
        )
        print(f"({time.perf_counter() - started:.3f}s with index load)", file=sys.stderr)
        return 0
    print(_describe(cache), flush=True)
    if args.command == "serve":
        web = LocalWeb(cache, host=args.host, port=args.port)
        host, port = web.start()
        print(f"serving on http://{host}:{port} (Host header routing, or use it as an HTTP proxy:", flush=True)
        print(f"  curl -x http://{host}:{port} {BASE_URL}library/json.html)  Ctrl-C to stop", flush=True)
        try:
            web.serve_forever()
        except KeyboardInterrupt:
            web.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
