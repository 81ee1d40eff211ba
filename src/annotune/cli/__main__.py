import sys

from annotune.cli import app

sys.exit(app())
