import sys

from facefix.cli.main import main

sys.exit(main())
