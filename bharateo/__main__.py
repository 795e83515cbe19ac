import sys

from bharateo.cli import main

sys.exit(main())
