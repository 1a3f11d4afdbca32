from plumbing.cli import service_cli
from services.lottery.main import SERVICE

service_cli(SERVICE)(prog_name="python -m services.lottery")
