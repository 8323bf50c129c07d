"""``samsa-stream bench``: every speed figure of the node in one run, on the same frames.

Sections (each a module): ``compute`` (the memcpy floor and the spectral-angle map, alone and beside
busy processes), ``ingest`` (capture formats to the node's layout), ``models`` (bare SAM2ImagePredictor,
each SAM2 engine, the tracker), ``node`` (the processes end to end over shared memory, ipc and tcp:
frame-to-screen, click-to-mask, one to several streams). ``report`` holds the JSON schema and writes
``bench.json`` + ``bench.md``; ``run`` puts the sections together.
"""
