import pytest

from gateway.settings import GatewaySettings
from plumbing.db import masked
from plumbing.settings import normalize_database_url
from services.mall.main import MallSettings
from services.points.main import PointsSettings


def test_each_service_reads_its_own_env_prefix(monkeypatch):
    monkeypatch.setenv("LOYALTY_POINTS_LISTEN", "127.0.0.1:6001")
    monkeypatch.setenv("LOYALTY_MALL_LISTEN", "127.0.0.1:6002")
    monkeypatch.setenv("LOYALTY_GATEWAY_MALL_ADDR", "mall:50054")
    assert PointsSettings().listen == "127.0.0.1:6001"
    assert MallSettings().listen == "127.0.0.1:6002"
    assert GatewaySettings().mall_addr == "mall:50054"
    assert GatewaySettings().listen == "127.0.0.1:50051"


def test_each_service_defaults_to_its_own_database():
    assert PointsSettings().database_url.endswith("/loyalty_points")
    assert MallSettings().database_url.endswith("/loyalty_mall")


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://u@h/db"])
def test_plain_postgres_urls_mean_psycopg(url):
    assert normalize_database_url(url) == "postgresql+psycopg://u@h/db"


def test_masked_hides_the_password_and_keeps_the_rest():
    assert masked("postgresql+psycopg://app:s3cret@db:5432/x") == (
        "postgresql+psycopg://app:***@db:5432/x"
    )
