"""The ASGI entry point for ``phip serve`` (each worker opens the node in ``$PHIP_DATA``)."""

from __future__ import annotations

import os
from pathlib import Path

from phip.api.app import create_app
from phip.console import assets
from phip.core import heap
from phip.node.node import Node

node = Node.open(Path(os.environ["PHIP_DATA"]), migrate=False)
node.warm()  # caches loaded now, not by the first request (nor inside its write lock)
app = create_app(node)
assets.fetch_in_background()  # the console's htmx and ECharts, once into the package cache
heap.settle()  # the node's start-up heap is kept for good: later collections need not walk it
heap.trim_when_idle()  # what a burst of requests freed goes back to the system once the worker is idle
