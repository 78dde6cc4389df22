"""`python -m pi0lab ...` (what `torchrun -m pi0lab train CONFIG` runs): the `pi0lab` command line."""

import sys

from pi0lab.cli import main

sys.exit(main())
