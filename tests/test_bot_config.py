"""Configuration: the example file is valid, wrong values name their key, secrets stay in the environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import EXAMPLE, Config, ConfigError, is_loopback, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dreambot.toml"
    path.write_text(text)
    return path


def test_the_example_is_the_defaults_and_data_lives_beside_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, EXAMPLE), environ={})
    defaults = Config()
    assert config.queue == defaults.queue and config.web == defaults.web and config.media == defaults.media
    assert config.worker == defaults.worker and config.results == defaults.results
    assert config.data_dir == tmp_path / "data" and config.database_path.name == "dreambot.sqlite3"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[queue]\nper_usr = 3", "Unknown configuration key 'queue.per_usr'. Did you mean queue.per_user?"),
        ("[queue]\nper_user = 'five'", "queue.per_user must be a whole number (got 'five')."),
        ("[web]\nenabled = 'yes'", "web.enabled must be true or false"),
        ("[media]\nworking_side = 10", "media.working_side must be between 64 and 8192."),
        ("web = 3", "web must be a table"),
        ("[web]\nport = 70000", "web.port must be between 1 and 65535."),
        ("log_level = 'loud'", "log_level must be one of debug, info, warning, error."),
        ("[queue\n", "is not valid TOML"),
        ("[web]\nhost = '0.0.0.0'", "set DREAMBOT_WEB_TOKEN"),
        ("[web]\ntoken = 'hunter2'", "secrets do not belong in the file"),
    ],
)
def test_a_wrong_value_is_a_sentence_naming_the_key(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), environ={})
    assert says in str(error.value)
    assert "hunter2" not in str(error.value)


def test_secrets_come_from_the_environment_and_never_print(tmp_path: Path) -> None:
    path = write(tmp_path, "[web]\nhost = '0.0.0.0'\n")
    config = load_config(path, environ={"DREAMBOT_WEB_TOKEN": "s3cret-value", "DISCORD_TOKEN": "d1sc0rd"})
    assert config.secrets.web_token == "s3cret-value" and config.secrets.discord_token == "d1sc0rd"
    assert "s3cret-value" not in repr(config) and "d1sc0rd" not in repr(config) and "s3cret" not in str(config)
    assert load_config(environ={"DREAMBOT_CONFIG": str(path), "DREAMBOT_WEB_TOKEN": "x"}).web.host == "0.0.0.0"


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def test_dreambot_init_writes_a_working_example_and_keeps_an_existing_file(tmp_path: Path, capsys) -> None:
    target = tmp_path / "bot.toml"
    assert main(["init", str(target)]) == 0
    assert load_config(target, environ={}).queue.per_user == 5
    assert main(["init", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["init", str(target), "--force"]) == 0


def test_dreambot_commands_explain_config_mistakes_with_exit_code_2(tmp_path: Path) -> None:
    bad = write(tmp_path, "[queue]\nper_user = 'x'\n")
    run = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(bad), "serve"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "queue.per_user must be a whole number" in run.stderr
    assert "Traceback" not in run.stderr
    empty = write(tmp_path, f"data_dir = '{tmp_path / 'nothing'}'\n")
    run = subprocess.run(
        [sys.executable, "-m", "bot.cli", "--config", str(empty), "status"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "start `dreambot serve` first" in run.stderr
