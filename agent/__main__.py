"""`python -m agent dev|start|console|connect`"""

from .cli import run
from .worker import server

# Job processes re-import the main module (forkserver/spawn): only the parent runs the CLI.
if __name__ == "__main__":
    run(server, name="avatar-agent")
