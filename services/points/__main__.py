from plumbing.cli import service_cli
from services.points.main import SERVICE

service_cli(SERVICE)(prog_name="python -m services.points")
