"""The Discord adapter: slash commands, mentions and buttons in; progress edits and results out.

It translates and nothing more: every request goes to :class:`DreamService`, every answer comes back
through the service's listener. What it remembers of its own is Discord bookkeeping (which result
was posted where, per-server settings), kept in a small SQLite file beside the queue, so a restart
neither loses a result nor posts one twice.

Commands are declared with discord.py's annotations, so their signatures are their documentation;
the ranges, choices and help lines come from the one option table in :mod:`bot.options`.

The way out, for one job: while it waits and dreams, one message is edited (the deferred answer of a
slash command, or the bot's reply to a mention) at most every ``progress_every`` seconds, newest state
wins; progress edits run beside the service's listener and are dropped, never queued, when the result
is ready. The result replaces that message (slash commands, while the 15-minute interaction token
lasts) or is posted as a new message with a mention (mentions, and slash commands whose token expired;
private results go to the requester's DMs then).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import discord
from discord import app_commands

from bot.jobqueue import QueueError
from bot.media import DESTINATION_LIMITS, MediaError, check_size, fit_result
from bot.options import MODES, Command, Mode, Option, OptionError, build_command, help_text, parse_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService, JobView
from dreamcore.classes import search_classes
from dreamcore.networks import layer_catalog, list_networks
from dreamcore.settings import PRESETS, DreamSettings

log = logging.getLogger(__name__)

PLATFORM = "discord"
DEFAULT_NETWORK = DreamSettings.network  # what a request without network= dreams with
TOKEN_LIFETIME = 15 * 60  # seconds an interaction token can edit and follow up
TOKEN_MARGIN = 30  # stop using a token this long before it expires
PROGRESS_EVERY = 3.0  # seconds between progress edits of one message (Discord allows about 5 per 5 s)
EDIT_GRACE = 0.5  # a progress edit already on the wire gets this long to land before the result goes out
CLOSE_GRACE = 10.0  # seconds close() waits for results being posted
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
ACTIONS = ("deeper", "layer", "zoom", "reroll", "delete", "share", "like")
CUSTOM_ID = rf"dreambot:(?P<action>{'|'.join(ACTIONS)}):(?P<job>[A-Za-z0-9_-]{{4,40}})"
# Answers meaning the interaction token can no longer be used: 401 Invalid Webhook Token, 404 Unknown Webhook,
# Unknown Message (the deferred answer was dismissed), Unknown Interaction.
TOKEN_GONE_CODES = {50027, 10015, 10008, 10062}


def option(mode: Mode, name: str) -> Option:
    return MODES[mode].option(name)


def int_range(mode: Mode, name: str) -> Any:
    spec = option(mode, name)
    return app_commands.Range[int, int(spec.minimum), int(spec.maximum)]


def float_range(mode: Mode, name: str) -> Any:
    spec = option(mode, name)
    return app_commands.Range[float, float(spec.minimum), float(spec.maximum)]


def describe(mode: Mode, *names: str, **extra: str) -> Any:
    """@app_commands.describe for ``names``, with the option table's help lines."""
    return app_commands.describe(**{name: option(mode, name).help[:100] for name in names}, **extra)


def fixed_choices(mode: Mode, name: str) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=value, value=value) for value in option(mode, name).valid_choices({})][:25]


PRESET_CHOICES = [app_commands.Choice(name=f"{p.name}: {p.description}"[:100], value=p.name) for p in PRESETS.values()]


@dataclass(frozen=True)
class GuildSettings:
    dream_channel_id: int | None = None  # where the dream of the day goes
    public_results: bool = True  # False: results are shown to the requester only
    allowed_networks: str = ""  # comma-separated; "" = all
    per_user_limit: int = 0  # dreams one person may have waiting here; 0 = the bot's own limit

    @property
    def networks(self) -> list[str]:
        return [name.strip() for name in self.allowed_networks.split(",") if name.strip()]


class DiscordStore:
    """Posts made and per-server settings, in a SQLite file of the adapter's own."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS deliveries (job_id TEXT PRIMARY KEY, message_id INTEGER, channel_id INTEGER,
                                                   delivered_at REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS guild_settings (guild_id INTEGER PRIMARY KEY, dream_channel_id INTEGER,
                                                       public_results INTEGER NOT NULL DEFAULT 1,
                                                       allowed_networks TEXT NOT NULL DEFAULT '',
                                                       per_user_limit INTEGER NOT NULL DEFAULT 0);
            CREATE TABLE IF NOT EXISTS results (message_id INTEGER PRIMARY KEY, job_id TEXT NOT NULL,
                                                requester_id INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS dream_channel_admins (guild_id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL);
            """
        )

    def delivered(self, job_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM deliveries WHERE job_id = ?", (job_id,)).fetchone() is not None

    def claim_delivery(self, job_id: str) -> bool:
        """True for the first caller only: a result is posted once, whatever restarts happen."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO deliveries (job_id, delivered_at) VALUES (?, ?)", (job_id, time.time())
        )
        return cursor.rowcount == 1

    def forget_delivery(self, job_id: str) -> None:
        self.db.execute("DELETE FROM deliveries WHERE job_id = ?", (job_id,))

    def record_result(self, message_id: int, channel_id: int | None, job_id: str, requester_id: int) -> None:
        self.db.execute(
            "UPDATE deliveries SET message_id = ?, channel_id = ? WHERE job_id = ?", (message_id, channel_id, job_id)
        )
        self.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (message_id, job_id, requester_id))

    def result_owner(self, message_id: int) -> int | None:
        """Who asked for the result posted as ``message_id`` (known even after the job itself has expired)."""
        row = self.db.execute("SELECT requester_id FROM results WHERE message_id = ?", (message_id,)).fetchone()
        return row[0] if row else None

    def guild(self, guild_id: int | None) -> GuildSettings:
        if guild_id is None:
            return GuildSettings()
        row = self.db.execute(
            "SELECT dream_channel_id, public_results, allowed_networks, per_user_limit FROM guild_settings "
            "WHERE guild_id = ?",
            (guild_id,),
        ).fetchone()
        return GuildSettings(row[0], bool(row[1]), row[2], row[3]) if row else GuildSettings()

    def set_guild(self, guild_id: int, settings: GuildSettings) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO guild_settings VALUES (?, ?, ?, ?, ?)",
            (
                guild_id,
                settings.dream_channel_id,
                int(settings.public_results),
                settings.allowed_networks,
                settings.per_user_limit,
            ),
        )

    # scheduled posts: who set each server's dream channel (told when posting there fails)
    def set_channel_admin(self, guild_id: int, user_id: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO dream_channel_admins VALUES (?, ?)", (guild_id, user_id))

    def dream_channels(self) -> list[tuple[int, int, int | None]]:
        """(server, channel, admin who set it) for every server with a dream-of-the-day channel."""
        return self.db.execute(
            "SELECT g.guild_id, g.dream_channel_id, a.user_id FROM guild_settings g LEFT JOIN dream_channel_admins a "
            "ON a.guild_id = g.guild_id WHERE g.dream_channel_id IS NOT NULL ORDER BY g.guild_id"
        ).fetchall()

    def message_of(self, claim: str) -> int | None:
        row = self.db.execute("SELECT message_id FROM deliveries WHERE job_id = ?", (claim,)).fetchone()
        return row[0] if row else None

    def set_message(self, claim: str, message_id: int, channel_id: int) -> None:
        self.db.execute(
            "UPDATE deliveries SET message_id = ?, channel_id = ? WHERE job_id = ?", (message_id, channel_id, claim)
        )

    def close(self) -> None:
        self.db.close()


class DiscordAdapter:
    def __init__(
        self,
        service: DreamService,
        token: str,
        *,
        dev_guild_id: int | None = None,
        progress_every: float = PROGRESS_EVERY,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.service = service
        self.token = token
        self.dev_guild_id = dev_guild_id  # commands sync to this server at once (development); else globally
        self.progress_every = progress_every
        self.store = DiscordStore(service.config.data_dir / "discord.sqlite3")
        # Interactions need no intent; mentions and DMs arrive with their content without the privileged
        # message-content intent. guilds: the server cache (upload limits, permissions).
        intents = discord.Intents.none()
        intents.guilds = intents.guild_messages = intents.dm_messages = True
        self.client = discord.Client(intents=intents, **(client_options or {}))
        self.tree = app_commands.CommandTree(self.client)
        self._logged_in = False
        self._closed = False
        # progress editing, per job: the newest view not yet shown, the task showing it, when the next edit may go
        self._latest: dict[str, JobView] = {}
        self._editors: dict[str, asyncio.Task] = {}
        self._next_edit: dict[str, float] = {}
        self._on_the_wire: set[str] = set()  # jobs whose progress edit is being sent right now
        self._unreachable: set[str] = set()  # jobs whose message can no longer be edited (token gone)
        self._finishing: set[str] = set()  # jobs whose answer is being posted: no more progress edits
        self._deliveries: set[asyncio.Task] = set()
        # The scheduler's preview of its next post, for /dreambot preview (set by bot.app when schedules run).
        self.schedule_preview: Callable[[str | None], Awaitable[Any]] | None = None
        # Set once what finished while the bot was away has been posted (after each login): a readiness signal.
        self.caught_up = asyncio.Event()
        self._register_commands()
        self.client.add_dynamic_items(ResultButton)
        self.client.dreambot = self  # buttons find the adapter through the client they arrive on
        self.client.setup_hook = self._setup_hook
        self.client.event(self.on_ready)
        self.client.event(self.on_message)
        service.add_listener(self.on_job, platform=PLATFORM)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        try:
            await self.client.start(self.token)
        except discord.LoginFailure:
            log.error("Discord refused DISCORD_TOKEN; copy it again from the developer portal (Bot → Reset Token).")
            raise

    async def close(self) -> None:
        """Stop: results being posted get a moment to land; progress edits are dropped."""
        if self._closed:
            return
        self._closed = True
        for task in self._editors.values():
            task.cancel()
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=CLOSE_GRACE)
        for task in [*self._editors.values(), *self._deliveries]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.close()
        self.store.close()

    async def _setup_hook(self) -> None:
        """After login, before the gateway: sync the commands; from now on REST calls work."""
        self._logged_in = True
        try:
            if self.dev_guild_id:
                guild = discord.Object(self.dev_guild_id)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
            else:
                await self.tree.sync()
        except discord.HTTPException as error:  # mentions and buttons work without them
            log.warning(
                "Discord: the slash commands could not be registered (%s); invite the bot with the "
                "applications.commands scope, and check [discord] dev_guild_id.",
                error,
            )

    async def on_ready(self) -> None:
        log.info("Discord: logged in as %s", self.client.user)
        await self.deliver_missed()
        self.caught_up.set()

    async def deliver_missed(self) -> None:
        """Results that finished while the bot was away (or mid-restart) are posted now, once."""
        for job in await self.service.queue.all_jobs(limit=500):
            if self._closed:
                return
            if job.user.startswith(f"{PLATFORM}:") and job.finished and not self.store.delivered(job.id):
                try:
                    await self._deliver(await self.service.view(job))
                except Exception:
                    log.exception("Discord: could not post the answer of job %s", job.id)

    # ------------------------------------------------------------------ ways in

    def _register_commands(self) -> None:
        adapter = self
        tree = self.tree

        @tree.command(name="dream", description=MODES[Mode.DREAM].help)
        @describe(
            Mode.DREAM, "preset", "layer", "network", "octaves", "iterations", "strength", "seed", image="the photo"
        )
        @app_commands.choices(preset=PRESET_CHOICES)
        async def dream(
            interaction: discord.Interaction,
            image: discord.Attachment,
            preset: str | None = None,
            layer: str | None = None,
            network: str | None = None,
            octaves: int_range(Mode.DREAM, "octaves") | None = None,  # type: ignore[valid-type]
            iterations: int_range(Mode.DREAM, "iterations") | None = None,  # type: ignore[valid-type]
            strength: float_range(Mode.DREAM, "strength") | None = None,  # type: ignore[valid-type]
            seed: int_range(Mode.DREAM, "seed") | None = None,  # type: ignore[valid-type]
        ) -> None:
            options = {
                "preset": preset,
                "layer": layer,
                "network": network,
                "octaves": octaves,
                "iterations": iterations,
                "strength": strength,
                "seed": seed,
            }
            await adapter.ask(interaction, Mode.DREAM, "", options, image)

        @tree.command(name="zoom", description=MODES[Mode.ZOOM].help)
        @describe(Mode.ZOOM, "preset", "layer", "network", "frames", "zoom", "rotate", "seed", image="the photo")
        @app_commands.choices(preset=PRESET_CHOICES)
        async def zoom(
            interaction: discord.Interaction,
            image: discord.Attachment,
            preset: str | None = None,
            layer: str | None = None,
            network: str | None = None,
            frames: int_range(Mode.ZOOM, "frames") | None = None,  # type: ignore[valid-type]
            zoom: float_range(Mode.ZOOM, "zoom") | None = None,  # type: ignore[valid-type]
            rotate: float_range(Mode.ZOOM, "rotate") | None = None,  # type: ignore[valid-type]
            seed: int_range(Mode.ZOOM, "seed") | None = None,  # type: ignore[valid-type]
        ) -> None:
            options = {
                "preset": preset,
                "layer": layer,
                "network": network,
                "frames": frames,
                "zoom": zoom,
                "rotate": rotate,
                "seed": seed,
            }
            await adapter.ask(interaction, Mode.ZOOM, "", options, image)

        @tree.command(name="layers", description=MODES[Mode.ATLAS].help[:100])
        @describe(Mode.ATLAS, "network", image="the photo")
        async def layers(
            interaction: discord.Interaction, image: discord.Attachment, network: str | None = None
        ) -> None:
            await adapter.ask(interaction, Mode.ATLAS, "", {"network": network}, image)

        @tree.command(name="visualize", description=MODES[Mode.VISUALIZE].help)
        @describe(Mode.VISUALIZE, "network", "size", "steps", "seed", what="a class name, e.g. banana or french horn")
        async def visualize(
            interaction: discord.Interaction,
            what: str,
            network: str | None = None,
            size: int_range(Mode.VISUALIZE, "size") | None = None,  # type: ignore[valid-type]
            steps: int_range(Mode.VISUALIZE, "steps") | None = None,  # type: ignore[valid-type]
            seed: int_range(Mode.VISUALIZE, "seed") | None = None,  # type: ignore[valid-type]
        ) -> None:
            options = {"network": network, "size": size, "steps": steps, "seed": seed}
            await adapter.ask(interaction, Mode.VISUALIZE, what, options)

        @tree.command(name="mix", description=MODES[Mode.MIX].help)
        @describe(
            Mode.MIX, "layout", "network", "size", "steps", "seed", classes="two classes or more, e.g. gorilla + banana"
        )
        @app_commands.choices(layout=fixed_choices(Mode.MIX, "layout"))
        async def mix(
            interaction: discord.Interaction,
            classes: str,
            layout: str | None = None,
            network: str | None = None,
            size: int_range(Mode.MIX, "size") | None = None,  # type: ignore[valid-type]
            steps: int_range(Mode.MIX, "steps") | None = None,  # type: ignore[valid-type]
            seed: int_range(Mode.MIX, "seed") | None = None,  # type: ignore[valid-type]
        ) -> None:
            options = {"layout": layout, "network": network, "size": size, "steps": steps, "seed": seed}
            await adapter.ask(interaction, Mode.MIX, classes, options)

        @tree.command(name="path", description=MODES[Mode.PATH].help)
        @describe(Mode.PATH, "shape", "count", "network", "size", "steps", "seed", what="a class name, e.g. jellyfish")
        @app_commands.choices(shape=fixed_choices(Mode.PATH, "shape"))
        async def path(
            interaction: discord.Interaction,
            what: str,
            shape: str | None = None,
            count: int_range(Mode.PATH, "count") | None = None,  # type: ignore[valid-type]
            network: str | None = None,
            size: int_range(Mode.PATH, "size") | None = None,  # type: ignore[valid-type]
            steps: int_range(Mode.PATH, "steps") | None = None,  # type: ignore[valid-type]
            seed: int_range(Mode.PATH, "seed") | None = None,  # type: ignore[valid-type]
        ) -> None:
            options = {"shape": shape, "count": count, "network": network, "size": size, "steps": steps, "seed": seed}
            await adapter.ask(interaction, Mode.PATH, what, options)

        @tree.command(name="letters", description=MODES[Mode.LETTERS].help)
        @describe(Mode.LETTERS, "fill", "network", "size", "steps", "seed", text="up to 12 letters or digits")
        async def letters(
            interaction: discord.Interaction,
            text: str,
            fill: str | None = None,
            network: str | None = None,
            size: int_range(Mode.LETTERS, "size") | None = None,  # type: ignore[valid-type]
            steps: int_range(Mode.LETTERS, "steps") | None = None,  # type: ignore[valid-type]
            seed: int_range(Mode.LETTERS, "seed") | None = None,  # type: ignore[valid-type]
        ) -> None:
            options = {"fill": fill, "network": network, "size": size, "steps": steps, "seed": seed}
            await adapter.ask(interaction, Mode.LETTERS, text, options)

        async def layer_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return layer_suggestions(getattr(interaction.namespace, "network", None), current)

        async def network_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            allowed = adapter.store.guild(interaction.guild_id).networks
            offered = adapter.service.networks()  # only networks this bot can use (bot/networks.py)
            return [
                app_commands.Choice(name=f"{spec.name}: {spec.description}"[:100], value=spec.name)
                for spec in list_networks()
                if spec.name in offered and current.lower() in spec.name and (not allowed or spec.name in allowed)
            ][:25]

        async def class_choices(_interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return class_suggestions(current)

        for command in (dream, zoom):
            command.autocomplete("layer")(layer_choices)
        for command in (dream, zoom, layers, visualize, mix, path, letters):
            command.autocomplete("network")(network_choices)
        for command in (visualize, path):
            command.autocomplete("what")(class_choices)
        letters.autocomplete("fill")(class_choices)

        @tree.command(name="queue", description="your dreams: position, estimate, progress")
        async def queue(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(await adapter.queue_text(interaction.user.id), ephemeral=True)

        @tree.command(name="cancel", description="cancel your latest dream (or one by its id)")
        @app_commands.describe(job="the dream's id, as shown in its message (default: your latest)")
        async def cancel(interaction: discord.Interaction, job: str | None = None) -> None:
            await interaction.response.send_message(await adapter.cancel_text(interaction, job), ephemeral=True)

        @tree.command(name="help", description="how to ask DreamBot for dreams")
        async def help_command(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(discord_help(), ephemeral=True)

        settings = app_commands.Group(
            name="dreambot",
            description="server settings for DreamBot (Manage Server only)",
            default_permissions=discord.Permissions(manage_guild=True),  # Discord hides it from everyone else
            guild_only=True,
            allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=False, private_channel=False),
        )

        @settings.command(name="settings", description="where daily dreams go, who sees results, which networks")
        @app_commands.describe(
            dream_channel="channel for the dream of the day",
            public="post results for everyone (true) or only for the requester (false)",
            networks="comma-separated networks people may use (empty: all)",
            per_user_limit="dreams one person may have waiting at once on this server (0: the bot's own limit)",
        )
        async def guild_settings(
            interaction: discord.Interaction,
            dream_channel: discord.TextChannel | None = None,
            public: bool | None = None,
            networks: str | None = None,
            per_user_limit: app_commands.Range[int, 0, 50] | None = None,
        ) -> None:
            await interaction.response.send_message(
                adapter.update_guild(interaction, dream_channel, public, networks, per_user_limit), ephemeral=True
            )

        @settings.command(name="preview", description="make the next scheduled dream now, without posting it")
        @app_commands.describe(schedule="which schedule (default: the first)")
        async def schedule_preview(interaction: discord.Interaction, schedule: str | None = None) -> None:
            await adapter.preview(interaction, schedule)

        tree.add_command(settings)

        @tree.error
        async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
            if isinstance(error, app_commands.CheckFailure):
                message = "You need the Manage Server permission for that."
            else:
                log.error(
                    "Discord: /%s failed", interaction.command.name if interaction.command else "?", exc_info=error
                )
                message = "Something went wrong on my side; please try again in a moment."
            with contextlib.suppress(discord.HTTPException):
                await adapter.tell(interaction, message)

    def _options_for_server(self, options: dict[str, Any], guild: GuildSettings) -> dict[str, Any]:
        """The server's network rule: a network it does not allow is refused; none named: the first it allows."""
        allowed = guild.networks
        if not allowed:
            return options
        network = options.get("network")
        if not network:
            network = DEFAULT_NETWORK if DEFAULT_NETWORK in allowed else allowed[0]
            return {**options, "network": network}
        if network.strip().lower() not in {name.lower() for name in allowed}:
            raise OptionError(f"This server allows these networks: {', '.join(allowed)}. Pick one of them.")
        return options

    def _server_settings(self, guild_id: int | None) -> tuple[GuildSettings, bool]:
        """The server's settings and whether results are public (never in DMs: those stay private)."""
        guild = self.store.guild(guild_id)
        return guild, guild_id is not None and guild.public_results

    async def ask(
        self,
        interaction: discord.Interaction,
        mode: Mode,
        subject: str,
        options: dict[str, Any],
        image: discord.Attachment | None = None,
    ) -> None:
        """A slash command's request: acknowledge at once, check, queue; the listener shows where it stands."""
        guild, public = self._server_settings(interaction.guild_id)
        response = await interaction.response.defer(
            thinking=True, ephemeral=interaction.guild_id is not None and not public
        )
        try:
            command = build_command(
                mode, subject, self._options_for_server(options, guild), networks=self.service.networks()
            )
            data = await self._download(image) if image is not None else None
            address = await self._interaction_address(interaction, response, public)
            await self.submit(command, interaction.user, address, data)
        except (OptionError, MediaError, QueueError) as error:
            await interaction.edit_original_response(content=f"⚠️ {error}"[:2000])

    async def _interaction_address(
        self, interaction: discord.Interaction, response: Any, public: bool
    ) -> dict[str, Any]:
        """Where the answer to a deferred interaction goes: its message, by token while the token lasts."""
        message_id = getattr(response, "message_id", None) or (await interaction.original_response()).id
        return {
            "application_id": interaction.application_id,
            "token": interaction.token,
            "token_expires": time.time() + TOKEN_LIFETIME - TOKEN_MARGIN,
            "message_id": message_id,
            "channel_id": interaction.channel_id,
            "guild_id": interaction.guild_id,
            "user_id": interaction.user.id,
            "public": public,
            "upload_limit": interaction.filesize_limit,
        }

    async def on_message(self, message: discord.Message) -> None:
        """A mention (or a DM) with an image, or a reply to one: the same grammar as everywhere."""
        me = self.client.user
        if message.author.bot or me is None:
            return  # the bot's own posts included
        if message.guild is not None and me not in message.mentions:
            return
        try:
            await self._ask_by_message(message, me)
        except discord.HTTPException as error:  # e.g. no permission to post in that channel
            log.warning("Discord: could not answer message %s in channel %s: %s", message.id, message.channel.id, error)

    async def _ask_by_message(self, message: discord.Message, me: discord.ClientUser) -> None:
        image = image_of(message)
        if image is None and message.reference is not None and message.reference.message_id:
            replied = message.reference.resolved
            if not isinstance(replied, discord.Message):
                with contextlib.suppress(discord.HTTPException):
                    replied = await message.channel.fetch_message(message.reference.message_id)
            image = image_of(replied) if isinstance(replied, discord.Message) else None
        text = re.sub(rf"<@!?{me.id}>", " ", message.content)
        guild, public = self._server_settings(message.guild.id if message.guild else None)
        try:
            parsed = parse_command(text, has_image=image is not None, networks=self.service.networks())
            options = self._options_for_server(dict(parsed.options), guild)
            command = build_command(parsed.mode, parsed.subject, options, networks=self.service.networks())
            data = await self._download(image) if image is not None else None
        except (OptionError, MediaError) as error:
            await message.reply(f"⚠️ {error}"[:2000], mention_author=False)
            return
        # The reply is the job's status message: edited while it waits and dreams, removed when the answer comes.
        reply = await message.reply("Got it: queueing…", mention_author=False)
        address = {
            "channel_id": message.channel.id,
            "guild_id": message.guild.id if message.guild else None,
            "user_id": message.author.id,
            "reply_to": message.id,
            "status_message_id": reply.id,
            "public": public,
            "upload_limit": message.guild.filesize_limit if message.guild else DESTINATION_LIMITS[PLATFORM],
        }
        try:
            await self.submit(command, message.author, address, data)
        except (OptionError, MediaError, QueueError) as error:
            await reply.edit(content=f"⚠️ {error}"[:2000])

    async def submit(
        self, command: Command, user: discord.abc.User, address: dict[str, Any], image: bytes | None
    ) -> JobView:
        requester = Requester(PLATFORM, str(user.id), user.display_name, admin=is_admin(user))
        limit = self.store.guild(address.get("guild_id")).per_user_limit or None
        request = DreamRequest(command, requester, Destination(PLATFORM, address), image=image)
        return await self.service.submit(request, per_user_limit=limit)

    async def _download(self, attachment: discord.Attachment | str) -> bytes:
        """The picture's bytes; the service's ingest checks them (size included) like every upload."""
        if isinstance(attachment, str):  # an image embed (a posted link Discord shows as a picture)
            if not trusted_media_url(attachment):
                raise MediaError("I can only fetch pictures that Discord itself shows; attach the image instead.")
            try:
                data = await self.client.http.get_from_cdn(attachment)
            except discord.HTTPException as error:
                raise MediaError("I could not fetch that picture; attach the image instead.") from error
            return data
        check_size(attachment.size, self.service.media_limits)  # before downloading it
        try:
            return await attachment.read()
        except discord.HTTPException as error:
            raise MediaError("I could not fetch that image from Discord; please attach it again.") from error

    async def tell(self, interaction: discord.Interaction, message: str) -> None:
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)

    async def queue_text(self, user_id: int) -> str:
        jobs = await self.service.queue.jobs_of(f"{PLATFORM}:{user_id}", limit=10)
        if not jobs:
            return "You have no dreams yet. Try `/dream` with a photo, or `/visualize banana`."
        lines = [describe_view(await self.service.view(job)) for job in jobs]
        return "\n".join(lines)[:2000]

    async def cancel_text(self, interaction: discord.Interaction, job_id: str | None) -> str:
        user = f"{PLATFORM}:{interaction.user.id}"
        if job_id is None:
            active = [j for j in await self.service.queue.jobs_of(user, limit=10) if not j.finished]
            if not active:
                return "You have nothing queued or dreaming. `/queue` lists your dreams."
            job_id = active[0].id
        try:
            view = await self.service.cancel(job_id.strip().strip("`"), by_user=user, admin=is_admin(interaction.user))
        except QueueError as error:
            return str(error)
        return f"Cancelled `{view.id}`." if view.state == "cancelled" else f"`{view.id}` stops at its next step."

    def update_guild(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | None,
        public: bool | None,
        networks: str | None,
        per_user_limit: int | None = None,
    ) -> str:
        if interaction.guild_id is None:
            return "Server settings are set in a server."
        current = self.store.guild(interaction.guild_id)
        if networks is not None:
            known = set(self.service.networks())  # a server may choose among the networks this bot can use
            names = [n.strip() for n in networks.split(",") if n.strip()]
            unknown = [n for n in names if n not in known]
            if unknown:
                return f"Unknown network {', '.join(unknown)}; known: {', '.join(sorted(known))}."
            networks = ",".join(names)
        updated = GuildSettings(
            channel.id if channel is not None else current.dream_channel_id,
            public if public is not None else current.public_results,
            networks if networks is not None else current.allowed_networks,
            per_user_limit if per_user_limit is not None else current.per_user_limit,
        )
        self.store.set_guild(interaction.guild_id, updated)
        if channel is not None:
            self.store.set_channel_admin(interaction.guild_id, interaction.user.id)
        channel_text = f"<#{updated.dream_channel_id}>" if updated.dream_channel_id else "not set"
        return (
            f"Dream of the day: {channel_text}. Results: {'public' if updated.public_results else 'requester only'}. "
            f"Networks: {updated.allowed_networks or 'all'}. "
            f"Dreams waiting per person: {updated.per_user_limit or 'the bot default'}."
        )

    # ------------------------------------------------------------------ ways out

    async def on_job(self, view: JobView) -> None:
        """The service's news about one of our jobs. Returns at once: edits and posts run beside the listener."""
        if self._closed or not self._logged_in:
            return  # not connected: on_ready's deliver_missed posts what finished meanwhile
        if view.finished:
            task = asyncio.ensure_future(self._deliver_logged(view))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        elif view.id not in self._finishing and view.id not in self._unreachable:
            self._latest[view.id] = view
            editor = self._editors.get(view.id)
            if editor is None or editor.done():
                self._editors[view.id] = asyncio.ensure_future(self._show_progress(view.id))

    async def _show_progress(self, job_id: str) -> None:
        """Edits the job's message with its newest state, at most every ``progress_every`` seconds."""
        while (view := self._latest.pop(job_id, None)) is not None:
            wait = self._next_edit.get(job_id, 0.0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                view = self._latest.pop(job_id, view)  # the newest that arrived meanwhile
            if job_id in self._finishing or self._closed:
                return
            if view.state == "queued" and view.position is None:
                with contextlib.suppress(QueueError):
                    view = await self.service.view(job_id)  # with its place in line
                if view.finished:
                    return
            self._next_edit[job_id] = time.monotonic() + self.progress_every
            preview = self.service.previews.get(job_id) if view.state == "running" else None
            files = [discord.File(io.BytesIO(preview), "preview.jpg")] if preview else []
            self._on_the_wire.add(job_id)
            try:
                await self._edit_status(view.destination, describe_view(view), files)
            except discord.HTTPException as error:  # progress is best effort; the answer is what counts
                log.debug("Discord: progress edit of %s failed: %s", job_id, error)
                if token_gone(error):
                    self._unreachable.add(job_id)  # no use trying every few seconds; the answer is posted anew
            finally:
                self._on_the_wire.discard(job_id)

    async def _stop_progress(self, job_id: str) -> None:
        """No progress edit may land after the answer: pending ones are dropped, one on the wire gets a moment."""
        self._finishing.add(job_id)
        self._latest.pop(job_id, None)
        self._next_edit.pop(job_id, None)
        editor = self._editors.pop(job_id, None)
        if editor is None or editor.done():
            return
        if job_id in self._on_the_wire:
            await asyncio.wait({editor}, timeout=EDIT_GRACE)
        editor.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await editor

    def _interaction_webhook(self, address: dict[str, Any]) -> discord.Webhook:
        """The interaction's webhook, rebuilt from the stored token (so it works after a restart too)."""
        return discord.Webhook.partial(address["application_id"], address["token"], client=self.client)

    async def _edit_status(self, address: dict[str, Any], text: str, files: list[discord.File]) -> None:
        extra: dict[str, Any] = {"attachments": files} if files else {}
        if token_usable(address):
            await self._interaction_webhook(address).edit_message(address["message_id"], content=text, **extra)
        elif address.get("status_message_id"):
            channel = self.client.get_partial_messageable(address["channel_id"])
            await channel.get_partial_message(address["status_message_id"]).edit(content=text, **extra)

    async def _deliver_logged(self, view: JobView) -> None:
        try:
            await self._deliver(view)
        except Exception:
            log.exception("Discord: could not post the answer of job %s", view.id)

    async def _deliver(self, view: JobView) -> None:
        if not self.store.claim_delivery(view.id):
            return  # posted already (before a restart, or by another event)
        try:
            await self._stop_progress(view.id)
            message = await self._post_answer(view)
        except discord.HTTPException as error:
            if 400 <= error.status < 500 and error.status != 429:
                # Discord refuses it (no access to the channel any more, ...): trying again would not help.
                log.warning("Discord: the answer of job %s was refused: %s", view.id, error)
                return
            self.store.forget_delivery(view.id)  # try again at the next start
            raise
        except BaseException:
            self.store.forget_delivery(view.id)
            raise
        finally:
            self._finishing.discard(view.id)
            self._unreachable.discard(view.id)
        if message is not None:
            self.store.record_result(message.id, message.channel.id, view.id, view.destination.get("user_id", 0))

    async def _post_answer(self, view: JobView) -> discord.Message | None:
        """The result (or the failure) where the request came from; returns the message that holds a result."""
        address = view.destination
        if view.state != "done" or view.result is None:
            what = f"{view.mode} {view.subject}".strip()
            if view.state == "failed":
                text = f"⚠️ `{view.id}` {what}: {view.error}"
            else:
                text = f"✖️ `{view.id}` {what}: cancelled."
            if await self._answer_in_place(address, content=text[:2000], attachments=[], view=None):
                return None
            await self._post_new(address, text, None, None)
            return None
        data = await asyncio.get_running_loop().run_in_executor(None, self.service.store.get, view.result["key"])
        extension = view.result["key"].rsplit(".", 1)[-1]
        limit = int(address.get("upload_limit") or DESTINATION_LIMITS[PLATFORM])
        data, extension = await asyncio.get_running_loop().run_in_executor(None, fit_result, data, extension, limit)
        caption = f"{view.result['caption']} · `{view.id}`"[:1900]
        name = f"dream.{extension}"
        buttons = result_buttons(view.id, view.mode)
        file = discord.File(io.BytesIO(data), name)
        message = await self._answer_in_place(address, content=caption, attachments=[file], view=buttons)
        if message is not None:
            return message
        return await self._post_new(address, caption, discord.File(io.BytesIO(data), name), buttons)

    async def _answer_in_place(self, address: dict[str, Any], **fields: Any) -> discord.Message | None:
        """Replace the interaction's message while its token lasts; None when it cannot (mention, expired)."""
        if not token_usable(address):
            return None
        webhook = self._interaction_webhook(address)
        try:
            return await webhook.edit_message(address["message_id"], **fields)
        except discord.HTTPException as error:
            if token_gone(error):
                return None  # the token expired (or the message was dismissed): post anew
            raise

    async def _post_new(
        self, address: dict[str, Any], text: str, file: discord.File | None, buttons: discord.ui.View | None
    ) -> discord.Message:
        """A new message with a mention: in the channel, or in the requester's DMs for a private result."""
        user_id = address.get("user_id")
        extra: dict[str, Any] = {"view": buttons} if buttons is not None else {}
        if file is not None:
            extra["file"] = file
        if address.get("guild_id") and not address.get("public", True) and user_id:
            dm = await self.client.create_dm(discord.Object(user_id))
            return await dm.send(text[:2000], **extra)
        channel = self.client.get_partial_messageable(address["channel_id"])
        mention = f"<@{user_id}> " if user_id else ""
        if address.get("reply_to"):
            extra["reference"] = discord.MessageReference(
                message_id=address["reply_to"], channel_id=address["channel_id"], fail_if_not_exists=False
            )
        message = await channel.send(
            f"{mention}{text}"[:2000],
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(user_id)] if user_id else False),
            **extra,
        )
        if address.get("status_message_id"):
            with contextlib.suppress(discord.HTTPException):
                await channel.get_partial_message(address["status_message_id"]).delete()
        return message

    # ------------------------------------------------------------------ buttons

    async def press(self, interaction: discord.Interaction, action: str, job_id: str) -> None:
        if action == "delete":
            await self._delete_result(interaction, job_id)
            return
        if action in ("share", "like"):
            await self._share_or_like(interaction, action, job_id)
            return
        guild, public = self._server_settings(interaction.guild_id)
        response = await interaction.response.defer(
            thinking=True, ephemeral=interaction.guild_id is not None and not public
        )
        try:
            original = await self.service.request_of(job_id)
            view = await self.service.view(job_id)
            command = original.command
            mode, image_key = command.mode, original.image_key
            options = {k: v for k, v in command.options.items() if k != "seed"}
            if action == "deeper" and view.result:
                image_key = view.result["key"]  # dream the dream again
            elif action == "reroll":
                options["seed"] = random.randrange(2**31)
            elif action == "zoom":
                mode = Mode.ZOOM
                options = {k: v for k, v in options.items() if k in ("preset", "network", "layer")}
            elif action == "layer":
                options["layer"] = another_layer(options.get("network"), options.get("layer"))
            command = build_command(
                mode, command.subject, self._options_for_server(options, guild), networks=self.service.networks()
            )
            address = await self._interaction_address(interaction, response, public)
            requester = Requester(
                PLATFORM, str(interaction.user.id), interaction.user.display_name, is_admin(interaction.user)
            )
            await self.service.submit(
                DreamRequest(command, requester, Destination(PLATFORM, address), image_key=image_key)
            )
        except QueueError as error:
            gone = isinstance(error, LookupError)
            text = "That dream is no longer stored; start a new one with /dream." if gone else str(error)
            await interaction.edit_original_response(content=f"⚠️ {text}")
        except (OptionError, MediaError) as error:
            await interaction.edit_original_response(content=f"⚠️ {error}"[:2000])
        except Exception:
            log.exception("Discord: the %s button of job %s failed", action, job_id)
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(
                    content="Something went wrong on my side; please try again in a moment."
                )

    async def _delete_result(self, interaction: discord.Interaction, job_id: str) -> None:
        owner = self.store.result_owner(interaction.message.id) if interaction.message else None
        if owner is None:
            with contextlib.suppress(QueueError):
                owner = int((await self.service.request_of(job_id)).requester.user_id)
        moderator = is_admin(interaction.user) or bool(
            getattr(getattr(interaction.user, "guild_permissions", None), "manage_messages", False)
        )
        if interaction.user.id != owner and not moderator:
            await interaction.response.send_message(
                "Only the person who asked for this dream (or a moderator) can delete it.", ephemeral=True
            )
            return
        await interaction.response.defer()
        if interaction.message is not None and not interaction.message.flags.ephemeral:
            await interaction.message.delete()  # the bot's own message: no Manage Messages needed
        else:
            await interaction.delete_original_response()  # an ephemeral one: only through the interaction

    async def _share_or_like(self, interaction: discord.Interaction, action: str, job_id: str) -> None:
        """Share: the requester lets the dream be picked as a dream of the day. Like: anyone, once each."""
        user = f"{PLATFORM}:{interaction.user.id}"
        if action == "like":
            likes = self.service.sharing.like(job_id, user)
            text = f"Liked. This dream has {likes} like{'s' if likes != 1 else ''}."
        else:
            owner = self.store.result_owner(interaction.message.id) if interaction.message else None
            if owner is None:
                with contextlib.suppress(QueueError):
                    owner = int((await self.service.request_of(job_id)).requester.user_id)
            if interaction.user.id != owner:
                text = "Only the person who asked for this dream can share it."
            else:
                self.service.sharing.share(job_id, user)
                text = "Shared: the most-liked shared dream of the day may be posted by DreamBot's schedule."
        await interaction.response.send_message(text, ephemeral=True)

    # ------------------------------------------------------------------ scheduled posts

    async def post_to_own_account(self, image: bytes, extension: str, text: str, alt: str, key: str) -> str:
        """The dream of the day in every server's dream channel (``/dreambot settings``), once per channel and key.

        A channel that fails is reported to the admin who set it (once per key) and raised after the others are
        posted, so the scheduler retries only what is missing.
        """
        posted: list[str] = []
        failed: list[str] = []
        for guild_id, channel_id, admin_id in self.store.dream_channels():
            claim = f"own:{key}:{channel_id}"
            message_id = self.store.message_of(claim)
            if message_id:
                posted.append(str(message_id))
                continue
            channel = self.client.get_partial_messageable(channel_id, guild_id=guild_id)
            try:
                if not self.store.claim_delivery(claim):  # a crash after the intent: look before posting again
                    async for earlier in channel.history(limit=20):
                        if earlier.author.id == getattr(self.client.user, "id", None) and earlier.content == text:
                            self.store.set_message(claim, earlier.id, channel_id)
                            posted.append(str(earlier.id))
                            break
                    else:
                        earlier = None
                    if earlier is not None:
                        continue
                file = discord.File(io.BytesIO(image), f"dream.{extension}", description=alt[:1024])
                message = await channel.send(text[:2000], file=file)
            except discord.HTTPException as error:
                failed.append(f"<#{channel_id}>: {error.text or error.status}")
                await self._tell_channel_admin(admin_id, channel_id, key, error)
                continue
            self.store.set_message(claim, message.id, channel_id)
            posted.append(str(message.id))
        if failed:
            raise ConnectionError(f"Discord: could not post in {', '.join(failed)}")
        return ",".join(posted) or "no channels"

    async def _tell_channel_admin(
        self, admin_id: int | None, channel_id: int, key: str, error: discord.HTTPException
    ) -> None:
        if admin_id is None or not self.store.claim_delivery(f"told:{key}:{channel_id}"):
            return
        with contextlib.suppress(discord.HTTPException):
            dm = await self.client.create_dm(discord.Object(admin_id))
            await dm.send(
                f"I could not post the dream of the day in <#{channel_id}> ({error.text or error.status}). "
                "Check that I may send messages and attach files there, or pick another channel with "
                "`/dreambot settings`."
            )

    async def preview(self, interaction: discord.Interaction, schedule: str | None) -> None:
        """/dreambot preview: the next scheduled picture, for the admin's eyes only; nothing is posted."""
        if self.schedule_preview is None:
            await interaction.response.send_message("No schedules run on this bot.", ephemeral=True)
            return
        await interaction.response.defer(thinking=True, ephemeral=True)
        try:
            picture = await self.schedule_preview(schedule)
        except (QueueError, ValueError) as error:
            await interaction.edit_original_response(content=f"⚠️ {error}"[:2000])
            return
        limit = DESTINATION_LIMITS[PLATFORM]
        data, extension = await asyncio.get_running_loop().run_in_executor(
            None, fit_result, picture.data, picture.extension, limit
        )
        await interaction.edit_original_response(
            content=f"Preview of {picture.schedule} for {picture.slot}:\n{picture.caption}"[:2000],
            attachments=[discord.File(io.BytesIO(data), f"preview.{extension}")],
        )


def token_gone(error: discord.HTTPException) -> bool:
    """Whether Discord says the interaction token (or its message) can no longer be used."""
    return error.status == 401 or error.code in TOKEN_GONE_CODES


def token_usable(address: dict[str, Any]) -> bool:
    """Whether the interaction token stored with a job can still edit its message (15 minutes, less a margin)."""
    return bool(address.get("token")) and time.time() < address.get("token_expires", 0)


def is_admin(user: discord.abc.User) -> bool:
    """Manage Server in the server the request came from (none in DMs)."""
    return bool(getattr(getattr(user, "guild_permissions", None), "manage_guild", False))


class ResultButton(discord.ui.DynamicItem[discord.ui.Button], template=CUSTOM_ID):
    """A button under a result; its custom id carries the action and the job, so it works after restarts."""

    def __init__(
        self, action: str, job_id: str, label: str = "", style: discord.ButtonStyle = discord.ButtonStyle.secondary
    ) -> None:
        super().__init__(
            discord.ui.Button(label=label or action.title(), style=style, custom_id=f"dreambot:{action}:{job_id}")
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> ResultButton:
        return cls(match["action"], match["job"], item.label or "", item.style)

    async def callback(self, interaction: discord.Interaction) -> None:
        adapter: DiscordAdapter = interaction.client.dreambot  # type: ignore[attr-defined]
        await adapter.press(interaction, self.action, self.job_id)


def result_buttons(job_id: str, mode: str) -> discord.ui.View:
    """Deeper, Another layer and Zoom for dreams of photos; Re-roll where a seed applies; Delete always."""
    has_seed = any(o.name == "seed" for o in MODES[Mode(mode)].options)
    buttons = []
    if mode == Mode.DREAM.value:
        buttons += [
            ("deeper", "Deeper", discord.ButtonStyle.primary),
            ("layer", "Another layer", discord.ButtonStyle.secondary),
            ("zoom", "Zoom", discord.ButtonStyle.secondary),
        ]
    if has_seed:
        buttons.append(("reroll", "Re-roll", discord.ButtonStyle.secondary))
    buttons.append(("delete", "Delete", discord.ButtonStyle.danger))
    # a second row: the owner shares it for the dream of the day; anyone likes it
    buttons += [("share", "Share", discord.ButtonStyle.secondary), ("like", "Like", discord.ButtonStyle.secondary)]
    view = discord.ui.View(timeout=None)
    for action, label, style in buttons:
        view.add_item(ResultButton(action, job_id, label, style))
    return view


def another_layer(network: str | None, current: str | None) -> str:
    """A different layer from the middle of the network, where dreams are most varied."""
    names = [
        layer.name
        for layer in layer_catalog(network or DEFAULT_NETWORK).layers
        if layer.name.startswith(("block", "inception", "mixed", "conv"))
    ]
    choices = [name for name in names[len(names) // 4 :] if name != current] or names
    return random.choice(choices)


def layer_suggestions(network: str | None, current: str) -> list[app_commands.Choice[str]]:
    """Layers matching what is typed; in a mix (``block9+0.5*bl``) the last term is completed."""
    try:
        layers = layer_catalog(network or DEFAULT_NETWORK).layers
    except Exception:
        return []
    cut = max(current.rfind("+"), current.rfind("*")) + 1
    head, term = current[:cut], current[cut:].strip().lower()
    matching = [layer for layer in layers if term in layer.name or any(term in alias for alias in layer.aliases)]
    return [
        app_commands.Choice(name=f"{head}{layer.name} ({layer.description})"[:100], value=f"{head}{layer.name}"[:100])
        for layer in matching
    ][:25]


def class_suggestions(current: str) -> list[app_commands.Choice[str]]:
    if not current.strip():
        return [
            app_commands.Choice(name=name, value=name) for name in ("banana", "jellyfish", "french horn", "volcano")
        ]
    return [app_commands.Choice(name=c.name[:100], value=c.name[:100]) for c in search_classes(current, limit=25)]


def image_of(message: discord.Message) -> discord.Attachment | str | None:
    """The message's picture: an image attachment, else any attachment (ingest says what is wrong with it),
    else the picture of an embed (a link Discord shows as an image), by its Discord-proxied address."""
    for attachment in message.attachments:
        if (attachment.content_type or "").split(";")[0] in IMAGE_TYPES:
            return attachment
    if message.attachments:
        return message.attachments[0]
    for embed in message.embeds:
        for picture in (embed.image, embed.thumbnail):
            url = picture.proxy_url or picture.url
            if url:
                return url
    return None


# Where embed pictures may be fetched from: Discord's own media proxy and CDN (never an arbitrary host a
# message names, which could point the bot at internal addresses), and the API host itself.
DISCORD_MEDIA_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")


def trusted_media_url(url: str) -> bool:
    parsed = urlsplit(url)
    api_host = urlsplit(discord.http.Route.BASE).netloc
    return (
        parsed.scheme in ("https", "http")
        and (parsed.hostname in DISCORD_MEDIA_HOSTS or parsed.netloc == api_host)
        and (parsed.scheme == "https" or parsed.netloc == api_host)
    )


def discord_help() -> str:
    """What /help answers: the commands, mentions, buttons, then the shared grammar."""
    lines = [
        "**DreamBot** dreams your photos (DeepDream) and draws pictures from nothing.",
        "**Commands**: `/dream` a photo · `/zoom` an endless zoom · `/layers` what each layer does · "
        "`/visualize` a class · `/mix` several classes · `/path` a class along a line · `/letters` text made of "
        "things · `/queue` your dreams · `/cancel` your latest · `/help`. Admins: `/dreambot settings`.",
        "**Mentions**: post a photo and mention me, e.g. `@DreamBot deeper layer=block10`, or reply to a message "
        "with a photo and mention me. In DMs no mention is needed.",
        "**Buttons** under a result: Deeper (dream it again), Another layer, Zoom, Re-roll (a new seed), Delete.",
        "",
        help_text(),
    ]
    return "\n".join(lines)[:2000]


def describe_view(view: JobView) -> str:
    """One line a person understands: where the job is."""
    what = f"{view.mode} {view.subject}".strip()
    if view.state == "queued":
        ahead = "next in line" if not view.position else f"{view.position} ahead of you"
        eta = f", about {max(1, round((view.eta_seconds or 0) / 60))} min" if view.eta_seconds else ""
        return f"⏳ `{view.id}` {what}: queued, {ahead}{eta}."
    if view.state == "running":
        detail = f" ({view.progress_text})" if view.progress_text else ""
        return f"🌀 `{view.id}` {what}: dreaming {view.progress * 100:.0f}%{detail}."
    if view.state == "done":
        return f"✅ `{view.id}` {what}: done."
    if view.state == "failed":
        return f"⚠️ `{view.id}` {what}: {view.error}"
    return f"✖️ `{view.id}` {what}: cancelled."
