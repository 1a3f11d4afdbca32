from plumbing.cli import service_cli
from services.levels.main import SERVICE

service_cli(SERVICE)(prog_name="python -m services.levels")
