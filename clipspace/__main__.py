"""`python -m clipspace ...` is the `clipspace` command."""
import sys

from .cli import main

sys.exit(main())
