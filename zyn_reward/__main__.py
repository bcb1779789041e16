"""`python -m zyn_reward score|eval|tune ...`: the command line of cli.py."""

from .cli import main

main()
