from plumbing.cli import service_cli
from services.risk.main import SERVICE

service_cli(SERVICE)(prog_name="python -m services.risk")
