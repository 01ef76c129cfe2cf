"""Search spaces as data: one YAML file per space (``<space>.yaml``: common keys and named
experiments), read and shape-checked by ``spaces``."""
