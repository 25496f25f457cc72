"""`python -m vipa_cli` (and `torchrun -m vipa_cli`) runs the vipa command line."""

from vipa_cli import main

main()
