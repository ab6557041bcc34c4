"""`python -m edge_server BUNDLE ...` is `edgeport serve BUNDLE ...`."""

import sys

from .cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
