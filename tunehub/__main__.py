import sys

from tunehub.cli import main

sys.exit(main())
