"""``python -m recforge`` (and ``torchrun -m recforge``): the command line."""

from recforge.cli.main import main

if __name__ == "__main__":
    main()
