"""``python -m dfq_deploy``: the same command line as ``dfq-deploy`` (and what ``torchrun -m dfq_deploy`` runs)."""

from .cli import main

if __name__ == "__main__":
    main()
