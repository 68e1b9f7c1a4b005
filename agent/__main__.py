"""`python -m agent dev|start|console|connect`; installed, the console script `avatar-agent`."""

from .cli import run
from .worker import server


def main() -> None:
    """The `avatar-agent` console script."""
    run(server, name="avatar-agent")


# Job processes re-import the main module (forkserver/spawn): only the parent runs the CLI.
if __name__ == "__main__":
    main()
