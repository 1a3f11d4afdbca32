from plumbing.cli import service_cli
from services.mall.main import SERVICE

service_cli(SERVICE)(prog_name="python -m services.mall")
