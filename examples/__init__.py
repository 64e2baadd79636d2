"""Services built on the kernel (not installed: run them from the repository root).

* :mod:`examples.blobstore` — a content-addressed blob store on aiohttp:
  ``ron-kernel run --app examples.blobstore:build``.
* ``bus_demo.py`` — the bus alone (``make demo-bus``).
"""
