"""deploy/ as far as this machine can check it: the compose file parses and says what it must, Redis's health check
really fails when Redis is not ready, every variable is documented, and systemd accepts the units."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from bot.config import X_KEYS

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
EXAMPLE_ENV = (DEPLOY / "dreambot.env.example").read_text()
README = (ROOT / "README.md").read_text()
UNITS = [DEPLOY / "dreambot.service", DEPLOY / "dreambot-worker@.service"]


def compose_variables() -> set[str]:
    """${NAME}, ${NAME:-default} and ${NAME:?message} in the compose file ($$NAME is the container's own)."""
    text = (DEPLOY / "compose.yaml").read_text()
    return set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))


def code_variables() -> set[str]:
    """Every environment variable the project's code reads."""
    names = set(X_KEYS)
    pattern = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z_][A-Z0-9_]*)["']""")
    for path in [*ROOT.glob("bot/**/*.py"), *ROOT.glob("dreamcore/**/*.py")]:
        text = path.read_text()
        names |= set(pattern.findall(text))
        names |= set(re.findall(r"""["']([A-Z][A-Z0-9_]*_)["']\s*(?:,|\))""", text)) & {
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
        }
    return names


def unit_variables() -> set[str]:
    names = set()
    for unit in UNITS:
        for line in unit.read_text().splitlines():
            if line.startswith("Environment="):
                names.add(line.split("=", 2)[1])
            names |= set(re.findall(r"^#\s+([A-Z][A-Z0-9_]+)=", line))
    return names


def documented_in_example() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", EXAMPLE_ENV, re.MULTILINE))


def test_the_compose_file_has_the_bot_redis_and_gpu_workers() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"bot", "redis", "worker"}
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    assert "--requirepass" in redis_command
    assert services["bot"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "${DREAMBOT_WORKERS" in str(services["worker"]["deploy"]["replicas"])
    mounts = {volume.split(":")[1] for s in services.values() for volume in s.get("volumes", [])}
    assert {"/data", "/cache"} <= mounts, "the database and results, and the model cache, are volumes"
    assert set(COMPOSE["volumes"]) == {"redis-data", "dreambot-data", "model-cache"}
    for name in ("bot", "worker"):
        assert services[name]["environment"]["DREAMBOT_BROKER_URL"].startswith("redis://:${REDIS_PASSWORD}@redis:")
        dockerfile = DEPLOY / Path(services[name]["build"]["dockerfile"]).name
        assert "torch==2.13.0" in dockerfile.read_text(), "the torch wheel is pinned as in constraints.txt"


def test_the_compose_configuration_names_the_celery_backend() -> None:
    import tomllib

    config = tomllib.loads((DEPLOY / "dreambot.compose.toml").read_text())
    assert config["worker"]["backend"] == "celery" and config["data_dir"] == "/data"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (scripts/setup.sh)")
def test_the_redis_health_check_passes_only_when_redis_answers(tmp_path: Path) -> None:
    check = COMPOSE["services"]["redis"]["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # As the container's shell would run it ($$ is compose's escape for $), against a private Redis on our port.
    command = check[1].replace("$$", "$").replace("redis-cli", f"redis-cli -p {port}")

    def healthy(password: str) -> bool:
        env = {"REDIS_PASSWORD": password, "PATH": "/usr/bin:/bin"}
        return subprocess.run(["sh", "-c", command], env=env, capture_output=True, timeout=20).returncode == 0

    assert not healthy("pw"), "no Redis: unhealthy"
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--requirepass", "pw"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, password="pw")
        deadline = time.monotonic() + 20
        while True:  # until Redis itself answers
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        assert healthy("pw")
        assert not healthy("wrong"), "a Redis that refuses the password is not ready for DreamBot"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_every_variable_is_documented_in_the_example_file_and_the_readme() -> None:
    used = compose_variables() | code_variables() | unit_variables()
    assert {"DREAMBOT_BROKER_URL", "REDIS_PASSWORD", "DREAMBOT_WEB_TOKEN", "DISCORD_TOKEN"} <= used
    missing_example = sorted(used - documented_in_example())
    assert not missing_example, f"not in deploy/dreambot.env.example: {missing_example}"
    missing_readme = sorted(name for name in used if name not in README)
    assert not missing_readme, f"not in README.md: {missing_readme}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    # The units expect the checkout at /opt/dreambot; point them at this one so the binary they start exists.
    dreambot = ROOT / ".venv" / "bin" / "dreambot"
    if not dreambot.exists():
        pytest.skip("no .venv/bin/dreambot (run scripts/setup.sh)")
    paths = []
    for unit, name in ((UNITS[0], "dreambot.service"), (UNITS[1], "dreambot-worker@cpu.service")):
        text = unit.read_text().replace("/opt/dreambot/.venv/bin/dreambot", str(dreambot))
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    (tmp_path / "dreambot-worker@.service").write_text((tmp_path / "dreambot-worker@cpu.service").read_text())
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *paths], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "dreambot" not in result.stderr, result.stderr  # no warning about our units either


def test_the_worker_configuration_loads_with_only_the_broker_set() -> None:
    from bot.config import load_config

    config = load_config(DEPLOY / "worker.toml", environ={"DREAMBOT_BROKER_URL": "redis://:pw@redis:6379/0"})
    assert config.worker.backend == "celery"
    bot = load_config(
        DEPLOY / "dreambot.compose.toml",
        environ={"DREAMBOT_BROKER_URL": "redis://:pw@redis:6379/0", "DREAMBOT_WEB_TOKEN": "t" * 32},
    )
    assert bot.web.host == "0.0.0.0" and bot.worker.backend == "celery"
