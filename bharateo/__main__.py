"""`python -m bharateo ...`: the command line (bharateo/cli.py), exit code 2 for bad input."""
import sys

from bharateo.cli import main

sys.exit(main())
