"""Configuration: one TOML file for settings, environment variables for secrets, read once at start-up.

A wrong value stops the start with a sentence naming the key; secrets are never read from the file
(so it can be shared and committed) and never logged.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(ValueError):
    """A configuration problem, as a sentence naming the key."""


@dataclass(frozen=True)
class WebConfig:
    enabled: bool = True
    host: str = "127.0.0.1"  # only this machine; anything else needs DREAMBOT_WEB_TOKEN
    port: int = 8080
    public_url: str = ""  # how others reach the page, for links in chat posts (e.g. https://dreams.example.org)
    gallery_size: int = 24


@dataclass(frozen=True)
class QueueConfig:
    per_user: int = 5  # queued + running requests per person
    cooldown_seconds: float = 5.0  # between one person's requests
    global_cap: int = 200  # queued requests in all
    max_attempts: int = 3  # a request that crashed the worker this often is dropped


@dataclass(frozen=True)
class WorkerConfig:
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    time_limit_seconds: float = 900.0  # a dream that runs longer is stopped and reported
    progress_interval_seconds: float = 1.0  # how often progress (and a preview) is published
    # Whether this machine can download network weights (googlenet, vgg16, inception_v3) on first use.
    # Off: only networks whose weights are already here are offered (bot/networks.py).
    download_weights: bool = False
    # Scale-out: "local" dreams in the bot's own process; "celery" hands jobs to `dreambot worker` processes on
    # other machines through Redis (DREAMBOT_BROKER_URL). The bot keeps the queue, its fairness and the leases.
    backend: str = "local"
    lease_seconds: float = 60.0  # a dispatched dream with no word from its worker for this long is given to another
    max_transfer_mb: float = 32.0  # photos and results travel through Redis up to this size


@dataclass(frozen=True)
class MediaConfig:
    max_upload_mb: float = 20.0
    max_megapixels: float = 50.0  # decompression-bomb limit, read from the header before decoding
    working_side: int = 1024  # photos are scaled down to this longer side before dreaming
    web_result_mb: float = 10.0


@dataclass(frozen=True)
class ResultsConfig:
    keep_days: float = 30.0  # finished requests and their files are removed after this
    max_gb: float = 5.0  # and the oldest go first when the store grows past this


@dataclass(frozen=True)
class DiscordConfig:
    # A server (guild) id to sync slash commands to at once, for development; 0 = globally (production:
    # Discord may take up to an hour to show them everywhere). The bot runs when DISCORD_TOKEN is set.
    dev_guild_id: int = 0


@dataclass(frozen=True)
class XConfig:
    # X (Twitter) runs when the four X_* user keys are set in the environment.
    hashtags: tuple[str, ...] = ("#deepdream",)
    # Self-serve plans may only reply to posts that mention the bot; true for plans that allow any reply.
    reply_to_any_post: bool = False
    poll_interval_seconds: float = 60.0
    daily_budget_dollars: float = 1.0
    monthly_budget_dollars: float = 20.0
    # Pay-per-use prices in dollars (2026).
    price_read_post: float = 0.005
    price_owned_read: float = 0.001
    price_create_post: float = 0.015
    price_reply: float = 0.010
    price_media_metadata: float = 0.005
    answers_per_conversation: int = 3  # loop guard
    block_list: tuple[str, ...] = ()  # user names or ids never answered


SCHEDULE_SOURCES = ("class", "mix", "letters", "path", "photo", "shared")
SCHEDULE_DESTINATIONS = ("discord", "x", "mastodon", "bluesky", "web")


@dataclass(frozen=True)
class ScheduleConfig:
    """One scheduled post ([[schedule]] in the file); checked by bot.schedule.check_schedules at start."""

    name: str = "dream-of-the-day"
    cron: str = "0 9 * * *"  # minute hour day month day-of-week, as cron reads it (0 and 7 are Sunday)
    timezone: str = "UTC"
    source: str = "class"  # class, mix, letters, path, photo, shared
    destinations: tuple[str, ...] = SCHEDULE_DESTINATIONS  # those not set up (no keys) are skipped
    classes: tuple[str, ...] = ()  # allow list of ImageNet classes to pick from (empty: all)
    deny: tuple[str, ...] = ()  # classes never picked
    words: tuple[str, ...] = ()  # letters: a word list to pick from; empty: the day's date
    folder: str = ""  # photo: a folder of photos, one dreamed with a random look
    network: str = ""  # empty: the default network
    grace_hours: float = 6.0  # a run missed while the bot was down is caught up within this, else recorded missed
    retries: int = 5  # attempts per destination
    retry_seconds: float = 30.0  # the first wait after a failed post; doubles, with jitter


X_KEYS = ("X_API_KEY", "X_API_SECRET", "X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET")


@dataclass(frozen=True)
class XKeys:
    """OAuth 1.0a user context of the bot's account, and an optional app-only bearer token."""

    api_key: str = ""
    api_secret: str = ""
    access_token: str = ""
    access_token_secret: str = ""
    bearer_token: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.api_key and self.api_secret and self.access_token and self.access_token_secret)

    def __repr__(self) -> str:
        return f"XKeys({'set' if self.enabled else 'unset'})"

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> XKeys:
        present = [name for name in X_KEYS if environ.get(name)]
        if present and len(present) < len(X_KEYS):
            missing = ", ".join(name for name in X_KEYS if name not in present)
            raise ConfigError(
                f"X needs all four user keys; {missing} {'is' if ',' not in missing else 'are'} not set. "
                "Copy them from the app's Keys and tokens page in X's developer console, or unset the others."
            )
        values = [environ.get(name, "") for name in X_KEYS]
        return cls(*values, bearer_token=environ.get("X_BEARER_TOKEN", ""))


VISIBILITIES = ("public", "unlisted", "private", "direct")  # Mastodon's, most public first


@dataclass(frozen=True)
class MastodonConfig:
    # Mastodon runs when MASTODON_BASE_URL and MASTODON_ACCESS_TOKEN are set in the environment.
    poll_interval_seconds: float = 30.0
    streaming: bool = True  # the user stream wakes the poll at once when the instance allows it
    hashtags: tuple[str, ...] = ()  # hashtag timelines read besides mentions, e.g. ["#deepdream"]; none by default
    mark_as_bot: bool = True  # set the account's "bot" flag at start (needs the write scope)
    max_visibility: str = "public"  # replies are never more public than this, nor than the post they answer
    answers_per_conversation: int = 3  # loop guard
    block_list: tuple[str, ...] = ()  # accounts (user@instance or ids) never answered


@dataclass(frozen=True)
class MastodonKeys:
    """The instance and the bot account's access token (an application's token with scopes read and write)."""

    base_url: str = ""
    access_token: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.base_url and self.access_token)

    def __repr__(self) -> str:
        return f"MastodonKeys({self.base_url or 'unset'}, token {'set' if self.access_token else 'unset'})"

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> MastodonKeys:
        base_url, token = environ.get("MASTODON_BASE_URL", "").strip(), environ.get("MASTODON_ACCESS_TOKEN", "")
        if bool(base_url) != bool(token):
            missing = "MASTODON_ACCESS_TOKEN" if base_url else "MASTODON_BASE_URL"
            raise ConfigError(
                f"Mastodon needs both MASTODON_BASE_URL and MASTODON_ACCESS_TOKEN; {missing} is not set. "
                "The README's Mastodon section says where to find them."
            )
        if base_url and not base_url.startswith(("https://", "http://")):
            raise ConfigError(f"MASTODON_BASE_URL must be the instance's address, e.g. https://{base_url}.")
        return cls(base_url.rstrip("/"), token)


@dataclass(frozen=True)
class BlueskyConfig:
    # Bluesky runs when BLUESKY_HANDLE and BLUESKY_APP_PASSWORD are set in the environment.
    poll_interval_seconds: float = 30.0
    answers_per_conversation: int = 3  # loop guard
    block_list: tuple[str, ...] = ()  # handles or DIDs never answered


@dataclass(frozen=True)
class BlueskyKeys:
    """The bot account's handle and an app password (Settings > Privacy and security > App passwords)."""

    handle: str = ""
    app_password: str = ""
    service_url: str = "https://bsky.social"

    @property
    def enabled(self) -> bool:
        return bool(self.handle and self.app_password)

    def __repr__(self) -> str:
        return f"BlueskyKeys({self.handle or 'unset'}, app password {'set' if self.app_password else 'unset'})"

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> BlueskyKeys:
        handle, password = (
            environ.get("BLUESKY_HANDLE", "").strip().lstrip("@"),
            environ.get("BLUESKY_APP_PASSWORD", ""),
        )
        if bool(handle) != bool(password):
            missing = "BLUESKY_APP_PASSWORD" if handle else "BLUESKY_HANDLE"
            raise ConfigError(f"Bluesky needs both BLUESKY_HANDLE and BLUESKY_APP_PASSWORD; {missing} is not set.")
        if password and not _looks_like_app_password(password):
            raise ConfigError(
                "BLUESKY_APP_PASSWORD does not look like an app password (four groups of four, xxxx-xxxx-xxxx-xxxx). "
                "Create one in Bluesky under Settings > Privacy and security > App passwords; "
                "never use the account's own password."
            )
        service = environ.get("BLUESKY_SERVICE_URL", "").strip().rstrip("/") or "https://bsky.social"
        return cls(handle, password, service)


def _looks_like_app_password(password: str) -> bool:
    groups = password.split("-")
    return len(groups) == 4 and all(len(group) == 4 and group.isalnum() for group in groups)


@dataclass(frozen=True)
class Secrets:
    """From the environment only."""

    web_token: str = ""  # DREAMBOT_WEB_TOKEN
    discord_token: str = ""  # DISCORD_TOKEN
    x: XKeys = field(default_factory=XKeys)  # X_API_KEY, X_API_SECRET, X_ACCESS_TOKEN, X_ACCESS_TOKEN_SECRET
    mastodon: MastodonKeys = field(default_factory=MastodonKeys)  # MASTODON_BASE_URL, MASTODON_ACCESS_TOKEN
    bluesky: BlueskyKeys = field(default_factory=BlueskyKeys)  # BLUESKY_HANDLE, BLUESKY_APP_PASSWORD
    broker_url: str = ""  # DREAMBOT_BROKER_URL: Redis for worker.backend = "celery"; may hold a password

    def __repr__(self) -> str:  # never print a secret, even by accident
        return f"Secrets(web_token={'set' if self.web_token else 'unset'}, discord_token=..., x=...)"


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data")
    log_level: str = "info"
    web: WebConfig = field(default_factory=WebConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    x: XConfig = field(default_factory=XConfig)
    schedules: tuple[ScheduleConfig, ...] = (ScheduleConfig(),)
    mastodon: MastodonConfig = field(default_factory=MastodonConfig)
    bluesky: BlueskyConfig = field(default_factory=BlueskyConfig)
    secrets: Secrets = field(default_factory=Secrets, repr=False)
    source: str = "defaults"  # which file it came from, for messages

    @property
    def database_path(self) -> Path:
        return self.data_dir / "dreambot.sqlite3"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    def check(self) -> None:
        """Rules that involve several keys."""
        if self.web.enabled and not is_loopback(self.web.host) and not self.secrets.web_token:
            raise ConfigError(
                f"web.host is {self.web.host!r}, which other machines can reach: set DREAMBOT_WEB_TOKEN in the "
                'environment to a long random string (visitors then need it), or use host = "127.0.0.1".'
            )
        _require(0 <= self.web.port <= 65535, "web.port must be between 1 and 65535. Use 0 for any free port.")
        _require(self.queue.per_user >= 1, "queue.per_user must be at least 1.")
        _require(self.queue.global_cap >= 1, "queue.global_cap must be at least 1.")
        _require(self.queue.max_attempts >= 1, "queue.max_attempts must be at least 1.")
        _require(self.queue.cooldown_seconds >= 0, "queue.cooldown_seconds cannot be negative.")
        _require(64 <= self.media.working_side <= 8192, "media.working_side must be between 64 and 8192.")
        _require(self.media.max_upload_mb > 0, "media.max_upload_mb must be above 0.")
        _require(self.worker.time_limit_seconds > 0, "worker.time_limit_seconds must be above 0.")
        _require(self.worker.backend in ("local", "celery"), 'worker.backend must be "local" or "celery".')
        _require(self.worker.lease_seconds >= 1, "worker.lease_seconds must be at least 1.")
        _require(self.worker.max_transfer_mb > 0, "worker.max_transfer_mb must be above 0.")
        _require(
            self.worker.backend != "celery" or bool(self.secrets.broker_url),
            'worker.backend is "celery" but DREAMBOT_BROKER_URL is not set; set it in the environment to your '
            "Redis, for example redis://:password@redis-host:6379/0.",
        )
        _require(self.x.poll_interval_seconds >= 10, "x.poll_interval_seconds must be at least 10.")
        _require(self.x.daily_budget_dollars > 0, "x.daily_budget_dollars must be above 0.")
        _require(self.x.monthly_budget_dollars > 0, "x.monthly_budget_dollars must be above 0.")
        _require(self.x.answers_per_conversation >= 1, "x.answers_per_conversation must be at least 1.")
        _require(
            all(tag.startswith("#") and len(tag) > 1 for tag in self.x.hashtags),
            'x.hashtags must be a list of tags such as ["#deepdream"].',
        )
        _require(self.mastodon.poll_interval_seconds >= 5, "mastodon.poll_interval_seconds must be at least 5.")
        _require(
            self.mastodon.max_visibility in VISIBILITIES,
            f"mastodon.max_visibility must be one of {', '.join(VISIBILITIES)}.",
        )
        _require(
            all(tag.startswith("#") and len(tag) > 1 for tag in self.mastodon.hashtags),
            'mastodon.hashtags must be a list of tags such as ["#deepdream"].',
        )
        _require(self.mastodon.answers_per_conversation >= 1, "mastodon.answers_per_conversation must be at least 1.")
        _require(self.bluesky.poll_interval_seconds >= 5, "bluesky.poll_interval_seconds must be at least 5.")
        _require(self.bluesky.answers_per_conversation >= 1, "bluesky.answers_per_conversation must be at least 1.")
        _require(self.log_level.lower() in LOG_LEVELS, f"log_level must be one of {', '.join(LOG_LEVELS)}.")
        from bot.schedule import check_schedules  # cron, time zones and sources need APScheduler and dreamcore

        check_schedules(self.schedules)


LOG_LEVELS = ("debug", "info", "warning", "error")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read the TOML file (``path``, else $DREAMBOT_CONFIG, else ./dreambot.toml if present, else defaults)."""
    environ = dict(os.environ if environ is None else environ)
    chosen = Path(path) if path else Path(environ["DREAMBOT_CONFIG"]) if environ.get("DREAMBOT_CONFIG") else None
    if chosen is None and Path("dreambot.toml").is_file():
        chosen = Path("dreambot.toml")
    data: dict[str, Any] = {}
    if chosen is not None:
        try:
            data = tomllib.loads(chosen.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"No configuration file at {chosen}; `dreambot init` writes an example.") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{chosen} is not valid TOML: {error}.") from None
    _refuse_secrets(data, chosen)
    schedule_tables = data.pop("schedule", None)
    config = _build(Config, data, "")
    if schedule_tables is not None:
        config = replace(config, schedules=_schedules(schedule_tables))
    secrets = Secrets(
        web_token=environ.get("DREAMBOT_WEB_TOKEN", ""),
        discord_token=environ.get("DISCORD_TOKEN", ""),
        x=XKeys.from_environ(environ),
        mastodon=MastodonKeys.from_environ(environ),
        bluesky=BlueskyKeys.from_environ(environ),
        broker_url=environ.get("DREAMBOT_BROKER_URL", ""),
    )
    config = replace(config, secrets=secrets, source=str(chosen) if chosen else "defaults")
    if chosen is not None and not config.data_dir.is_absolute():
        config = replace(config, data_dir=(chosen.parent / config.data_dir))
    config.check()
    return config


SECRET_KEYS = ("web_token", "discord_token", "token", "password", "secret", "broker_url")


def _refuse_secrets(data: dict[str, Any], source: Path | None) -> None:
    tables = [data] + [value for value in data.values() if isinstance(value, dict)]
    for table in tables:
        for key, value in table.items():
            if key in SECRET_KEYS and value:
                raise ConfigError(
                    f"{source}: secrets do not belong in the file ({key}); set them in the environment "
                    "(DREAMBOT_WEB_TOKEN, DISCORD_TOKEN) instead."
                )


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name not in ("secrets", "source")}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean {prefix}{close[0]}?" if close else f" Known keys: {', '.join(sorted(known))}."
            raise ConfigError(f"Unknown configuration key {name!r}.{hint}")
        hint = hints[key]
        if is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a table ([{name}]), not a single value.")
            values[key] = _build(hint, value, f"{name}.")
        else:
            values[key] = _convert(value, hint, name)
    return cls(**values)


def _schedules(tables: Any) -> tuple[ScheduleConfig, ...]:
    """[[schedule]] tables; ``schedule = []`` turns scheduled posts off."""
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise ConfigError("schedule must be a list of tables: write [[schedule]] above each one's keys.")
    hints = get_type_hints(ScheduleConfig)
    schedules = []
    for index, table in enumerate(tables):
        label = f"schedule {table.get('name', index + 1)!r}"
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in hints:
                close = difflib.get_close_matches(key, sorted(hints), n=1)
                hint = f" Did you mean {close[0]}?" if close else f" Known keys: {', '.join(sorted(hints))}."
                raise ConfigError(f"Unknown key {key!r} in {label}.{hint}")
            values[key] = _convert(value, hints[key], f"{label}: {key}")
        schedules.append(ScheduleConfig(**values))
    return tuple(schedules)


def _convert(value: Any, hint: Any, name: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false (got {value!r}).")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be a whole number (got {value!r}).")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name} must be a number (got {value!r}).")
    if hint == tuple[str, ...]:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise ConfigError(f'{name} must be a list of text in quotes, e.g. ["one", "two"] (got {value!r}).')
    if hint is Path:
        if isinstance(value, str) and value:
            return Path(value).expanduser()
        raise ConfigError(f"{name} must be a folder path in quotes (got {value!r}).")
    if isinstance(value, str):
        return value
    raise ConfigError(f"{name} must be text in quotes (got {value!r}).")


EXAMPLE = """\
# DreamBot configuration. `dreambot serve --config dreambot.toml` reads it (or $DREAMBOT_CONFIG).
# Secrets never go in this file: they come from the environment.
#   DREAMBOT_WEB_TOKEN   required when the web page listens on anything but 127.0.0.1
#   DISCORD_TOKEN        turns on the Discord adapter
#   X_API_KEY, X_API_SECRET, X_ACCESS_TOKEN, X_ACCESS_TOKEN_SECRET   all four turn on X; X_BEARER_TOKEN optional
#   MASTODON_BASE_URL, MASTODON_ACCESS_TOKEN   both turn on Mastodon
#   BLUESKY_HANDLE, BLUESKY_APP_PASSWORD       both turn on Bluesky; BLUESKY_SERVICE_URL optional
#   DREAMBOT_BROKER_URL  Redis for worker.backend = "celery", e.g. redis://:password@redis-host:6379/0

# Where the queue (SQLite), results and uploads are kept; relative to this file.
data_dir = "data"
# debug, info, warning or error
log_level = "info"

[web]
# The built-in page. 127.0.0.1 = only this machine; "0.0.0.0" = everyone (then DREAMBOT_WEB_TOKEN is required).
enabled = true
host = "127.0.0.1"
port = 8080
# How others reach the page, for links in chat posts.
public_url = ""
gallery_size = 24

[queue]
# Requests one person may have waiting or running, and the pause between their requests.
per_user = 5
cooldown_seconds = 5
# Requests waiting in all before new ones are turned away politely.
global_cap = 200
# A request that crashes the worker this many times is dropped (and its owner told).
max_attempts = 3

[worker]
# auto picks CUDA, then Apple's MPS, then the CPU.
device = "auto"
# A dream that runs longer than this is stopped and reported.
time_limit_seconds = 900
progress_interval_seconds = 1.0
# true if this machine can reach download.pytorch.org: googlenet, vgg16 and inception_v3 are then offered and
# downloaded on first use. false: only networks already installed are offered (`dreambot status` lists the rest).
download_weights = false
# "local": dream in this process. "celery": hand dreams to `dreambot worker` processes (one per GPU, on any
# machine) through Redis at $DREAMBOT_BROKER_URL; the queue and its fairness stay here.
backend = "local"
# A dispatched dream whose worker says nothing for this long is given to another worker.
lease_seconds = 60
# Photos and results travel through Redis up to this size.
max_transfer_mb = 32

[media]
# Uploads larger than this are refused before decoding.
max_upload_mb = 20
# Decompression-bomb limit, read from the file's header.
max_megapixels = 50
# Photos are scaled down to this longer side before dreaming (bigger = slower).
working_side = 1024
web_result_mb = 10

[results]
# Finished requests and their pictures are removed after this many days,
keep_days = 30
# and the oldest go first when they take more than this.
max_gb = 5

[x]
# Hashtags searched (besides mentions). Replies go only to posts that mention the bot unless your plan allows more.
hashtags = ["#deepdream"]
reply_to_any_post = false
poll_interval_seconds = 60
# Money: X bills every call; reading and answering stop for the day (or month) when these are spent.
daily_budget_dollars = 1.0
monthly_budget_dollars = 20.0
price_read_post = 0.005
price_owned_read = 0.001
price_create_post = 0.015
price_reply = 0.010
price_media_metadata = 0.005
answers_per_conversation = 3
block_list = []

# Scheduled posts (the dream of the day), one [[schedule]] table each; without any, one dream-of-the-day at
# 09:00 UTC posts a class picture everywhere an account is set up. `schedule = []` turns them off.
# [[schedule]]
# name = "dream-of-the-day"
# cron = "0 9 * * *"          # minute hour day month day-of-week (0 or 7 = Sunday, as in cron)
# timezone = "UTC"
# source = "class"            # class, mix, letters, path, photo (with folder = "..."), shared
# classes = []                # pick from these ImageNet classes (empty: all); deny = [] never these
# destinations = ["discord", "x", "mastodon", "bluesky", "web"]
# grace_hours = 6             # a run missed while the bot was down is caught up once within this
[mastodon]
poll_interval_seconds = 30
# The user stream, when the instance allows it, makes answers come at once; polling goes on besides.
streaming = true
# Hashtag timelines read besides mentions (none by default), e.g. ["#deepdream"].
hashtags = []
# Set the account's "bot" flag at start.
mark_as_bot = true
# Replies are never more public than this, nor than the post they answer (public, unlisted, private, direct).
max_visibility = "public"
answers_per_conversation = 3
block_list = []

[bluesky]
poll_interval_seconds = 30
answers_per_conversation = 3
block_list = []
"""
