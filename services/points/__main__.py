from services.points.main import SERVICE
from plumbing.cli import service_cli

service_cli(SERVICE)(prog_name="python -m services.points")
