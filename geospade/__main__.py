"""`python -m geospade`: the same command as the `geospade` console script."""

from geospade.cli import main

if __name__ == "__main__":
    main()
