"""``python -m jax_gna.simulator``: see :mod:`jax_gna.simulator.cli`."""

import sys

from jax_gna.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
