"""`python -m clipspace ...` is the `clipspace` command."""
import sys

from clipspace.cli import main

sys.exit(main())
