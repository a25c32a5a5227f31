"""The Discord adapter: slash commands, mentions and buttons in; progress edits and results out.

It translates and nothing more: every request goes to :class:`DreamService`, every answer comes back
through the service's listener. What it remembers of its own is Discord bookkeeping (which result
was posted where, per-server settings), kept in a small SQLite file beside the queue, so a restart
neither loses a result nor posts one twice.

Commands are declared with discord.py's annotations, so their signatures are their documentation;
the ranges, choices and help lines come from the one option table in :mod:`bot.options`.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
from discord import app_commands

from bot.jobqueue import QueueError
from bot.media import DESTINATION_LIMITS, MediaError, fit_result
from bot.options import MODES, Mode, Option, OptionError, build_command, help_text, parse_command
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService, JobView
from dreamcore.classes import search_classes
from dreamcore.networks import layer_catalog, list_networks
from dreamcore.settings import PRESETS

log = logging.getLogger(__name__)

PLATFORM = "discord"
TOKEN_LIFETIME = 15 * 60  # seconds an interaction token can edit and follow up
TOKEN_MARGIN = 30  # stop using a token this long before it expires
PROGRESS_EVERY = 3.0  # seconds between progress edits of one message
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
CUSTOM_ID = r"dreambot:(?P<action>deeper|layer|zoom|reroll|delete):(?P<job>[A-Za-z0-9_-]{4,40})"


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


PRESET_CHOICES = [app_commands.Choice(name=f"{p.name}: {p.description}"[:100], value=p.name) for p in PRESETS.values()]


def network_choices() -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=spec.name, value=spec.name) for spec in list_networks()][:25]


@dataclass(frozen=True)
class GuildSettings:
    dream_channel_id: int | None = None  # where the dream of the day goes
    public_results: bool = True  # False: results are shown to the requester only
    allowed_networks: str = ""  # comma-separated; "" = all


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
                                                       allowed_networks TEXT NOT NULL DEFAULT '');
            CREATE TABLE IF NOT EXISTS results (message_id INTEGER PRIMARY KEY, job_id TEXT NOT NULL,
                                                requester_id INTEGER NOT NULL);
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

    def guild(self, guild_id: int | None) -> GuildSettings:
        if guild_id is None:
            return GuildSettings()
        row = self.db.execute(
            "SELECT dream_channel_id, public_results, allowed_networks FROM guild_settings WHERE guild_id = ?",
            (guild_id,),
        ).fetchone()
        return GuildSettings(row[0], bool(row[1]), row[2]) if row else GuildSettings()

    def set_guild(self, guild_id: int, settings: GuildSettings) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO guild_settings VALUES (?, ?, ?, ?)",
            (guild_id, settings.dream_channel_id, int(settings.public_results), settings.allowed_networks),
        )

    def close(self) -> None:
        self.db.close()


class DiscordAdapter:
    def __init__(self, service: DreamService, token: str, *, dev_guild_id: int | None = None) -> None:
        self.service = service
        self.token = token
        self.dev_guild_id = dev_guild_id  # commands sync to this server at once (development); else globally
        self.store = DiscordStore(service.config.data_dir / "discord.sqlite3")
        self.client = discord.Client(intents=discord.Intents.default())  # no privileged intent needed
        self.tree = app_commands.CommandTree(self.client)
        self._last_edit: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._register_commands()
        self.client.add_dynamic_items(ResultButton)
        self.client.dreambot = self  # buttons find the adapter through the client they arrive on
        self.client.setup_hook = self._setup_hook
        self.client.event(self.on_ready)
        self.client.event(self.on_message)
        service.add_listener(self.on_job, platform=PLATFORM)

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        await self.client.start(self.token)

    async def close(self) -> None:
        await self.client.close()
        self.store.close()

    async def _setup_hook(self) -> None:
        if self.dev_guild_id:
            guild = discord.Object(self.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    async def on_ready(self) -> None:
        log.info("Discord: logged in as %s", self.client.user)
        await self.deliver_missed()

    async def deliver_missed(self) -> None:
        """Results that finished while the bot was away (or mid-restart) are posted now, once."""
        for job in await self.service.queue.all_jobs(limit=500):
            if job.user.startswith(f"{PLATFORM}:") and job.finished and not self.store.delivered(job.id):
                await self.on_job(await self.service.view(job))

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

        @dream.autocomplete("layer")
        async def dream_layer(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return layer_suggestions(interaction.namespace.network, current)

        @dream.autocomplete("network")
        async def dream_network(_interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return [c for c in network_choices() if current.lower() in c.value][:25]

        @tree.command(name="visualize", description=MODES[Mode.VISUALIZE].help)
        @app_commands.describe(what="a class name, e.g. banana or french horn", seed="repeat a result exactly")
        async def visualize(
            interaction: discord.Interaction,
            what: str,
            seed: int_range(Mode.VISUALIZE, "seed") | None = None,  # type: ignore[valid-type]
        ) -> None:
            await adapter.ask(interaction, Mode.VISUALIZE, what, {"seed": seed})

        @visualize.autocomplete("what")
        async def visualize_what(_interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return class_suggestions(current)

        @tree.command(name="mix", description=MODES[Mode.MIX].help)
        @app_commands.describe(classes="two classes or more, e.g. gorilla and french horn")
        @app_commands.choices(layout=[app_commands.Choice(name=v, value=v) for v in option(Mode.MIX, "layout").choices])
        async def mix(interaction: discord.Interaction, classes: str, layout: str | None = None) -> None:
            await adapter.ask(interaction, Mode.MIX, classes, {"layout": layout})

        @tree.command(name="path", description=MODES[Mode.PATH].help)
        @app_commands.choices(shape=[app_commands.Choice(name=v, value=v) for v in option(Mode.PATH, "shape").choices])
        async def path(
            interaction: discord.Interaction,
            what: str,
            shape: str | None = None,
            count: int_range(Mode.PATH, "count") | None = None,  # type: ignore[valid-type]
        ) -> None:
            await adapter.ask(interaction, Mode.PATH, what, {"shape": shape, "count": count})

        path.autocomplete("what")(visualize_what)

        @tree.command(name="letters", description=MODES[Mode.LETTERS].help)
        @app_commands.describe(text="up to 12 letters", fill="one class for every letter (default: A of apes...)")
        async def letters(interaction: discord.Interaction, text: str, fill: str | None = None) -> None:
            await adapter.ask(interaction, Mode.LETTERS, text, {"fill": fill})

        @tree.command(name="zoom", description=MODES[Mode.ZOOM].help)
        async def zoom(
            interaction: discord.Interaction,
            image: discord.Attachment,
            frames: int_range(Mode.ZOOM, "frames") | None = None,  # type: ignore[valid-type]
            preset: str | None = None,
        ) -> None:
            await adapter.ask(interaction, Mode.ZOOM, "", {"frames": frames, "preset": preset}, image)

        @tree.command(name="layers", description="one photo dreamed at a row of layers: what each layer does")
        async def layers(
            interaction: discord.Interaction, image: discord.Attachment, network: str | None = None
        ) -> None:
            await adapter.ask(interaction, Mode.ATLAS, "", {"network": network}, image)

        @tree.command(name="queue", description="your dreams: position, estimate, progress")
        async def queue(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(await adapter.queue_text(interaction.user.id), ephemeral=True)

        @tree.command(name="cancel", description="cancel your latest dream (or one by its id)")
        async def cancel(interaction: discord.Interaction, job: str | None = None) -> None:
            await interaction.response.send_message(await adapter.cancel_text(interaction, job), ephemeral=True)

        @tree.command(name="help", description="how to ask DreamBot for dreams")
        async def help_command(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(help_text()[:2000], ephemeral=True)

        settings = app_commands.Group(
            name="dreambot",
            description="server settings for DreamBot (Manage Server only)",
            default_permissions=discord.Permissions(manage_guild=True),
            guild_only=True,
        )

        @settings.command(name="settings", description="where daily dreams go, who sees results, which networks")
        @app_commands.describe(
            dream_channel="channel for the dream of the day",
            public="post results for everyone (true) or only for the requester (false)",
            networks="comma-separated networks people may use (empty: all)",
        )
        async def guild_settings(
            interaction: discord.Interaction,
            dream_channel: discord.TextChannel | None = None,
            public: bool | None = None,
            networks: str | None = None,
        ) -> None:
            await interaction.response.send_message(
                adapter.update_guild(interaction, dream_channel, public, networks), ephemeral=True
            )

        tree.add_command(settings)

        @tree.error
        async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
            message = (
                "You need the Manage Server permission for that."
                if isinstance(error, app_commands.MissingPermissions)
                else "Something went wrong on my side; please try again in a moment."
            )
            log.exception("command failed", exc_info=error)
            await adapter.tell(interaction, message)

    async def ask(
        self,
        interaction: discord.Interaction,
        mode: Mode,
        subject: str,
        options: dict[str, Any],
        image: discord.Attachment | None = None,
    ) -> None:
        """A slash command's request: acknowledge at once, check, queue, and show where it stands."""
        guild = self.store.guild(interaction.guild_id)
        response = await interaction.response.defer(thinking=True, ephemeral=not guild.public_results)
        try:
            command = build_command(mode, subject, options)
            self._check_network(command.options.get("network"), guild)
            data = await self._download(image) if image is not None else None
            address = {
                "application_id": interaction.application_id,
                "token": interaction.token,
                "token_expires": time.time() + TOKEN_LIFETIME - TOKEN_MARGIN,
                "message_id": getattr(response, "message_id", None),
                "channel_id": interaction.channel_id,
                "guild_id": interaction.guild_id,
                "user_id": interaction.user.id,
                "public": guild.public_results,
            }
            view = await self.submit(command, interaction.user, address, data)
        except (OptionError, MediaError, QueueError) as error:
            await interaction.edit_original_response(content=f"⚠️ {error}")
            return
        await self._edit_progress(view, force=True)

    async def on_message(self, message: discord.Message) -> None:
        """A mention (or a DM) with an image, or a reply to one: the same grammar as everywhere."""
        me = self.client.user
        if message.author.bot or me is None:
            return
        direct = message.guild is None
        if not direct and me not in message.mentions:
            return
        image = image_of(message)
        if image is None and message.reference is not None and message.reference.message_id:
            with contextlib.suppress(discord.HTTPException):
                replied = message.reference.resolved or await message.channel.fetch_message(
                    message.reference.message_id
                )
                image = image_of(replied) if isinstance(replied, discord.Message) else None
        text = re.sub(rf"<@!?{me.id}>", " ", message.content)
        guild = self.store.guild(message.guild.id if message.guild else None)
        try:
            command = parse_command(text, has_image=image is not None)
            self._check_network(command.options.get("network"), guild)
            data = await self._download(image) if image is not None else None
            reply = await message.reply("Got it: queued…", mention_author=False)
            address = {
                "channel_id": message.channel.id,
                "guild_id": message.guild.id if message.guild else None,
                "user_id": message.author.id,
                "reply_to": message.id,
                "status_message_id": reply.id,
                "public": True,
            }
            view = await self.submit(command, message.author, address, data)
        except (OptionError, MediaError, QueueError) as error:
            await message.reply(f"⚠️ {error}", mention_author=False)
            return
        await self._edit_progress(view, force=True)

    async def submit(
        self, command: Any, user: discord.abc.User, address: dict[str, Any], image: bytes | None
    ) -> JobView:
        admin = bool(getattr(getattr(user, "guild_permissions", None), "manage_guild", False))
        requester = Requester(PLATFORM, str(user.id), user.display_name, admin=admin)
        return await self.service.submit(DreamRequest(command, requester, Destination(PLATFORM, address), image=image))

    async def _download(self, attachment: discord.Attachment | Any) -> bytes:
        limit = self.service.media_limits.max_bytes
        if isinstance(attachment, discord.Attachment):
            if attachment.size > limit:
                raise MediaError(
                    f"That file is {attachment.size / 2**20:.1f} MB; the limit is {limit / 2**20:g} MB. "
                    "Send a smaller photo."
                )
            return await attachment.read()
        raise MediaError("I could not fetch that image; attach it to your message instead.")

    def _check_network(self, network: str | None, guild: GuildSettings) -> None:
        allowed = [n.strip() for n in guild.allowed_networks.split(",") if n.strip()]
        if allowed and (network or "lite0") not in allowed:
            raise OptionError(f"This server allows these networks: {', '.join(allowed)}.")

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
                return "You have nothing queued or dreaming."
            job_id = active[0].id
        admin = bool(getattr(getattr(interaction.user, "guild_permissions", None), "manage_guild", False))
        try:
            view = await self.service.cancel(job_id, by_user=user, admin=admin)
        except QueueError as error:
            return str(error)
        return f"Cancelled `{view.id}`." if view.state == "cancelled" else f"`{view.id}` stops at its next step."

    def update_guild(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | None,
        public: bool | None,
        networks: str | None,
    ) -> str:
        if interaction.guild_id is None:
            return "Server settings are set in a server."
        current = self.store.guild(interaction.guild_id)
        if networks is not None:
            known = {spec.name for spec in list_networks()}
            unknown = [n for n in (n.strip() for n in networks.split(",")) if n and n not in known]
            if unknown:
                return f"Unknown network {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        updated = GuildSettings(
            channel.id if channel is not None else current.dream_channel_id,
            public if public is not None else current.public_results,
            networks if networks is not None else current.allowed_networks,
        )
        self.store.set_guild(interaction.guild_id, updated)
        channel_text = f"<#{updated.dream_channel_id}>" if updated.dream_channel_id else "not set"
        return (
            f"Dream of the day: {channel_text}. Results: {'public' if updated.public_results else 'requester only'}. "
            f"Networks: {updated.allowed_networks or 'all'}."
        )

    # ------------------------------------------------------------------ ways out

    async def on_job(self, view: JobView) -> None:
        """The service's news about one of our jobs: progress edits while it waits and dreams, then the answer."""
        if view.finished:
            await self._deliver(view)
        else:
            await self._edit_progress(view)

    async def _edit_progress(self, view: JobView, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_edit.get(view.id, 0.0) < PROGRESS_EVERY:
            return
        lock = self._locks.setdefault(view.id, asyncio.Lock())
        if lock.locked():
            return  # an edit is on its way; progress never queues up behind itself or a result
        async with lock:
            self._last_edit[view.id] = now
            preview = self.service.previews.get(view.id) if view.state == "running" else None
            files = [discord.File(io.BytesIO(preview), "preview.jpg")] if preview else []
            with contextlib.suppress(discord.HTTPException):
                await self._edit_status(view.destination, describe_view(view), files)

    async def _edit_status(self, address: dict[str, Any], text: str, files: list[discord.File]) -> None:
        if address.get("token") and time.time() < address.get("token_expires", 0):
            webhook = discord.Webhook.partial(address["application_id"], address["token"], client=self.client)
            await webhook.edit_message(address["message_id"], content=text, attachments=files)
        elif address.get("status_message_id"):
            channel = self.client.get_partial_messageable(address["channel_id"])
            await channel.get_partial_message(address["status_message_id"]).edit(content=text, attachments=files)

    async def _deliver(self, view: JobView) -> None:
        if not self.store.claim_delivery(view.id):
            return  # posted already (before a restart, or by another event)
        lock = self._locks.setdefault(view.id, asyncio.Lock())
        async with lock:  # waits for an edit in flight: results are never starved by progress
            try:
                message = await self._post_answer(view)
            except Exception:
                self.store.forget_delivery(view.id)  # try again at the next start
                raise
            if message is not None:
                self.store.record_result(message.id, message.channel.id, view.id, view.destination.get("user_id", 0))
        self._locks.pop(view.id, None)
        self._last_edit.pop(view.id, None)

    async def _post_answer(self, view: JobView) -> discord.Message | None:
        address = view.destination
        if view.state != "done" or view.result is None:
            text = f"⚠️ {view.error}" if view.state == "failed" else "Cancelled."
            await self._edit_status(address, text, [])
            return None
        data = self.service.store.get(view.result["key"])
        extension = view.result["key"].rsplit(".", 1)[-1]
        limit = DESTINATION_LIMITS[PLATFORM]
        data, extension = fit_result(data, extension, limit)
        caption = f"{view.result['caption']} · `{view.id}`"
        buttons = result_buttons(view.id, view.mode)
        file = discord.File(io.BytesIO(data), f"dream.{extension}")
        if address.get("token") and time.time() < address.get("token_expires", 0):
            webhook = discord.Webhook.partial(address["application_id"], address["token"], client=self.client)
            return await webhook.edit_message(address["message_id"], content=caption, attachments=[file], view=buttons)
        # The interaction token has expired (or this was a mention): a new message in the channel, with a mention.
        channel = self.client.get_partial_messageable(address["channel_id"])
        mention = f"<@{address['user_id']}> " if address.get("user_id") else ""
        reference = (
            discord.MessageReference(
                message_id=address["reply_to"], channel_id=address["channel_id"], fail_if_not_exists=False
            )
            if address.get("reply_to")
            else None
        )
        message = await channel.send(f"{mention}{caption}", file=file, view=buttons, reference=reference)
        if address.get("status_message_id"):
            with contextlib.suppress(discord.HTTPException):
                await channel.get_partial_message(address["status_message_id"]).delete()
        return message

    # ------------------------------------------------------------------ buttons

    async def press(self, interaction: discord.Interaction, action: str, job_id: str) -> None:
        user = f"{PLATFORM}:{interaction.user.id}"
        try:
            original = await self.service.request_of(job_id)
            view = await self.service.view(job_id)
        except QueueError:
            await self.tell(interaction, "That dream is no longer stored; start a new one with /dream.")
            return
        if action == "delete":
            owner = original.requester.key == user
            admin = bool(getattr(getattr(interaction.user, "guild_permissions", None), "manage_guild", False))
            if not (owner or admin):
                await self.tell(interaction, "Only the person who asked (or an admin) can delete this.")
                return
            await interaction.response.defer()
            if interaction.message is not None:
                await interaction.message.delete()
            return
        command = original.command
        options = {k: v for k, v in command.options.items() if k != "seed"}
        image_key = original.image_key
        mode = command.mode
        if action == "deeper" and view.result:
            image_key = view.result["key"]  # dream the dream again
        elif action == "reroll":
            options["seed"] = random.randrange(2**31)
        elif action == "zoom":
            mode, options = Mode.ZOOM, {k: v for k, v in options.items() if k in ("preset", "network", "layer")}
        elif action == "layer":
            options["layer"] = another_layer(options.get("network"), options.get("layer"))
        await interaction.response.defer(thinking=True)
        response_message = await interaction.original_response()
        address = {
            "application_id": interaction.application_id,
            "token": interaction.token,
            "token_expires": time.time() + TOKEN_LIFETIME - TOKEN_MARGIN,
            "message_id": response_message.id,
            "channel_id": interaction.channel_id,
            "guild_id": interaction.guild_id,
            "user_id": interaction.user.id,
            "public": True,
        }
        try:
            command = build_command(mode, command.subject, options)
            admin = bool(getattr(getattr(interaction.user, "guild_permissions", None), "manage_guild", False))
            requester = Requester(PLATFORM, str(interaction.user.id), interaction.user.display_name, admin=admin)
            request = DreamRequest(command, requester, Destination(PLATFORM, address), image_key=image_key)
            new_view = await self.service.submit(request)
        except (OptionError, MediaError, QueueError) as error:
            await interaction.edit_original_response(content=f"⚠️ {error}")
            return
        await self._edit_progress(new_view, force=True)


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
    view = discord.ui.View(timeout=None)
    buttons = [("deeper", "Deeper", discord.ButtonStyle.primary)]
    if mode in (Mode.DREAM.value,):
        buttons += [
            ("layer", "Another layer", discord.ButtonStyle.secondary),
            ("zoom", "Zoom", discord.ButtonStyle.secondary),
        ]
    buttons += [("reroll", "Re-roll", discord.ButtonStyle.secondary), ("delete", "Delete", discord.ButtonStyle.danger)]
    if mode not in (Mode.DREAM.value, Mode.ZOOM.value):
        buttons = [b for b in buttons if b[0] != "deeper"]
    for action, label, style in buttons:
        view.add_item(ResultButton(action, job_id, label, style))
    return view


def another_layer(network: str | None, current: str | None) -> str:
    """A different layer from the middle of the network, where dreams are most varied."""
    names = [
        layer.name
        for layer in layer_catalog(network or "lite0").layers
        if layer.name.startswith(("block", "inception", "mixed", "conv"))
    ]
    choices = [name for name in names[len(names) // 4 :] if name != current] or names
    return random.choice(choices)


def layer_suggestions(network: str | None, current: str) -> list[app_commands.Choice[str]]:
    try:
        layers = layer_catalog(network or "lite0").layers
    except Exception:
        return []
    matching = [layer for layer in layers if current.lower() in layer.name]
    return [
        app_commands.Choice(name=f"{layer.name} ({layer.description})"[:100], value=layer.name) for layer in matching
    ][:25]


def class_suggestions(current: str) -> list[app_commands.Choice[str]]:
    if not current.strip():
        return [
            app_commands.Choice(name=name, value=name) for name in ("banana", "jellyfish", "french horn", "volcano")
        ]
    return [app_commands.Choice(name=c.name[:100], value=c.name[:100]) for c in search_classes(current, limit=25)]


def image_of(message: discord.Message) -> discord.Attachment | None:
    for attachment in message.attachments:
        if (attachment.content_type or "").split(";")[0] in IMAGE_TYPES:
            return attachment
    return message.attachments[0] if message.attachments else None


def describe_view(view: JobView) -> str:
    """One line a person understands: where the job is."""
    what = f"{view.mode} {view.subject}".strip()
    if view.state == "queued":
        ahead = "next in line" if not view.position else f"{view.position} ahead of you"
        eta = f", about {max(1, round((view.eta_seconds or 0) / 60))} min" if view.eta_seconds else ""
        return f"⏳ `{view.id}` {what}: queued, {ahead}{eta}."
    if view.state == "running":
        return f"🌀 `{view.id}` {what}: dreaming {view.progress * 100:.0f}% ({view.progress_text})."
    if view.state == "done":
        return f"✅ `{view.id}` {what}: done."
    if view.state == "failed":
        return f"⚠️ `{view.id}` {what}: {view.error}"
    return f"✖️ `{view.id}` {what}: cancelled."
