import sys

from langserver.cli import main

sys.exit(main())
