"""Services built on the kernel (not installed: run them from the repository root).

* :mod:`examples.blobstore` — a content-addressed blob store on aiohttp:
  ``ron-kernel run --app examples.blobstore:build``.
* ``typed_service.py`` — the smallest typed service (``python examples/typed_service.py``).
* ``bus_demo.py`` — the bus alone (``make demo-bus``).
"""
