import sys

from doormat.cli import main

sys.exit(main())
