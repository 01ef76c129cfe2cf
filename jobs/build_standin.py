#!/usr/bin/env python
"""Build the foveation check's stand-ins for pretrained DINOv2 into the model store (NOT DINOv2).

    python jobs/build_standin.py --ref fovea/standin-tiny-dinov2-glyphs                # CPU, ~1 min
    python jobs/build_standin.py --ref fovea/standin-dinov2-small-glyphs --device cuda  # one GPU
    python jobs/build_standin.py --all --steps 5 --device cpu                          # smoke test

What they are and how they are trained: fovea.platform.check.standin.
"""

from __future__ import annotations

import logging

from fovea.platform.check.standin import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    raise SystemExit(main())
