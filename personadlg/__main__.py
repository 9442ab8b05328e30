"""`python -m personadlg` is the same as the `personadlg` command."""

from personadlg.cli import main

if __name__ == "__main__":
    main()
