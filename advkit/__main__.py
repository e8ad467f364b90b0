"""``python -m advkit`` (also what ``torchrun -m advkit`` runs)."""

from advkit._internal.cli import main

if __name__ == "__main__":
    main()
