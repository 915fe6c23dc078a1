"""deploy/compose.yaml, checked offline by `docker-compose config` (Debian's docker-compose v1,
which the CI installs: apt-get install -y docker-compose).

The compose file's env_file is deploy/.env, which only a developer has: the checks point
SWITCHBOARD_ENV_FILE at deploy/env.example instead (every variable commented or at its
default), which also proves the example is a valid env file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (what the containers must listen on)


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail("docker-compose is not installed: apt-get install -y docker-compose "
                    "(the compose checks must run, not skip)")
    return found


def compose(*args: str, file: Path = COMPOSE) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWITCHBOARD_ENV_FILE": "env.example"}
    env.pop("POSTGRES_PASSWORD", None)
    return subprocess.run([_docker_compose(), "-f", str(file), *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False, cwd=ROOT)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = compose("config")
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def test_config_is_valid() -> None:
    result = compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_config_rejects_an_invalid_file(tmp_path: Path) -> None:
    """`config -q` can fail: a misspelt key is refused."""
    broken = tmp_path / "compose.yaml"
    text = COMPOSE.read_text().replace("    depends_on:\n", "    depends_onn:\n", 1)
    broken.write_text(text)
    result = compose("config", "-q", file=broken)
    assert result.returncode != 0 and "depends_onn" in result.stderr


def _seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)(ms|h|m|s)", duration):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def test_services(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"postgres", "valkey", "migrate", "ingress", "worker"}
    assert services["postgres"]["image"] == "pgvector/pgvector:pg17"
    assert services["valkey"]["image"] == "valkey/valkey:8"
    bots = {name: services[name] for name in ("migrate", "ingress", "worker")}
    assert bots["migrate"]["command"] == ["migrate"]
    assert bots["ingress"]["command"] == ["run", "--workers", "0"]
    assert bots["worker"]["command"] == ["worker"]
    assert bots["worker"]["deploy"]["replicas"] >= 2
    shutdown_grace = Settings.model_fields["bot_shutdown_grace_s"].default
    for name, service in bots.items():
        assert service["build"]["context"] == str(ROOT), name
        assert (ROOT / service["build"]["dockerfile"]) == ROOT / "deploy" / "Dockerfile", name
        assert service["image"] == "switchboard:local", name
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env[
            "DATABASE_URL"], name
        assert env["REDIS_URL"] == "redis://valkey:6379/0", name
        assert env["BOT_MIGRATE_ON_START"] == "false", name
        assert env["BOT_HTTP_HOST"] == ALL_INTERFACES, name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert _seconds(service["stop_grace_period"]) > shutdown_grace, name
    # only the ingress is published, on loopback
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert list(published) == ["ingress"]
    (port,) = published["ingress"]
    # v1 prints "127.0.0.1:8080:8080/tcp", Compose v2 the long syntax
    text = port if isinstance(port, str) else (
        f"{port.get('host_ip', '')}:{port['published']}:{port['target']}")
    assert text.removesuffix("/tcp") == "127.0.0.1:8080:8080"


def test_start_order(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("postgres", "valkey", "ingress", "worker"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "valkey": {"condition": "service_healthy"}}
    for name in ("ingress", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["postgres"] == {"condition": "service_healthy"}, name
        assert depends["valkey"] == {"condition": "service_healthy"}, name
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert "/health/ready" in probe, name


def test_named_volumes(config: dict[str, Any]) -> None:
    assert set(config["volumes"]) == {"postgres-data", "valkey-data"}
    mounts = {name: [str(v) for v in s.get("volumes", [])]
              for name, s in config["services"].items()}
    assert any("postgres-data" in m for m in mounts["postgres"])
    assert any("valkey-data" in m for m in mounts["valkey"])
