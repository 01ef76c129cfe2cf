#!/usr/bin/env python
"""Stage 3 entry point: `python jobs/stage3.py --config FILE key=value ... [--dry-run]`.

Also runs as `ray job submit --working-dir . -- python jobs/stage3.py ...` (RAY_ADDRESS is
set by the job, so it joins that cluster); without an address it starts a local cluster.
See fovea.platform.stages for the options.
"""

import sys

from fovea.platform.stages import main

if __name__ == "__main__":
    sys.exit(main(3))
