"""The egress proxy for agent workspaces: mitmproxy with a host allow-list, per-episode recording and replay.

``credentials`` (per-episode proxy credentials), ``addon`` (runs inside mitmdump, ``.venv-egress``),
``launcher`` (starts mitmdump), ``control`` (control API client), ``network`` (the Docker network
workspaces reach the proxy on).
"""
