import sys

from annotune.cli.main import app

sys.exit(app())
