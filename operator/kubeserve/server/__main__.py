"""Run the server commands as ``python -m kubeserve.server serve|fetch ...``."""

import sys

from kubeserve.server import cli

sys.exit(cli.main(sys.argv[1:]))
