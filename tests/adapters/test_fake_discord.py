"""The fake Discord (tests/fake_discord.py) against the real discord.py client, driven through a toy bot.

The toy bot is not DreamBot's adapter: it exists to prove that the real library logs in, syncs commands, receives
interactions and messages, and that what it sends is recorded and validated the way Discord would.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import aiohttp
import discord
import pytest
import pytest_asyncio
from discord import app_commands
from discord.webhook.async_ import async_context, interaction_response_params
from fake_discord import FakeDiscord, FormErrors, validate_command

pytestmark = pytest.mark.asyncio

DATA = Path(__file__).parents[1] / "data"
PNG = (DATA / "chelsea.png").read_bytes()
JPEG = (DATA / "rocket.jpg").read_bytes()


class WaveView(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)
        self.pressed_by: list[int] = []

    @discord.ui.button(label="Wave", custom_id="hello:wave", style=discord.ButtonStyle.primary)
    async def wave(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.pressed_by.append(interaction.user.id)
        await interaction.response.edit_message(content=f"{interaction.user.name} waved", view=None)


class AgainButton(discord.ui.DynamicItem[discord.ui.Button], template=r"again:(?P<n>\d+)"):
    def __init__(self, n: int) -> None:
        super().__init__(discord.ui.Button(label=f"Again ({n})", custom_id=f"again:{n}"))
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> AgainButton:
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"again {self.n}", ephemeral=True)


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    text = discord.ui.TextInput(label="What did you think?", custom_id="feedback:text")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks: {self.text.value}", ephemeral=True)


class ToyBot(discord.Client):
    """A tiny bot: /dream (attachment, defer, edit, follow-up with file), /hello (button), mentions with images."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.guild_id = guild_id
        self.downloaded: list[bytes] = []
        self.seen: list[tuple[str, int]] = []  # (content, attachments) of every message the bot received
        self.errors: list[discord.HTTPException] = []
        self.release = asyncio.Event()
        self.wave_view = WaveView()
        self._add_commands()

    def _add_commands(self) -> None:
        tree = self.tree

        @tree.command(description="Dream on a picture")
        @app_commands.describe(image="The picture", steps="How long to dream")
        async def dream(
            interaction: discord.Interaction, image: discord.Attachment, steps: app_commands.Range[int, 1, 50] = 10
        ) -> None:
            await interaction.response.defer(thinking=True)
            data = await image.read()
            self.downloaded.append(data)
            await interaction.edit_original_response(content=f"dreaming {image.filename} for {steps} steps")
            file = discord.File(io.BytesIO(data[::-1]), filename="dream.png")
            await interaction.followup.send("done", file=file, view=discord.ui.View().add_item(AgainButton(1)))

        @dream.autocomplete("steps")
        async def steps_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[int]]:
            return [app_commands.Choice(name=f"{n} steps", value=n) for n in (5, 10, 20) if str(n).startswith(current)]

        @tree.command(description="Say hello with a button")
        async def hello(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("hello!", view=self.wave_view)

        @tree.command(description="Answers late, after the fake's deadline")
        async def slow(interaction: discord.Interaction) -> None:
            await self.release.wait()
            try:
                await interaction.response.send_message("finally")
            except discord.HTTPException as exc:
                self.errors.append(exc)

        @tree.command(description="Defers, then follows up when released")
        async def later(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await interaction.followup.send("first")  # edits the deferred message
            await self.release.wait()
            try:
                await interaction.followup.send("much later")
            except discord.HTTPException as exc:
                self.errors.append(exc)

        @tree.command(description="Asks for feedback")
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(FeedbackModal())

        @tree.command(name="settings", description="Server settings (admins)")
        @app_commands.default_permissions(manage_guild=True)
        @app_commands.guilds(self.guild_id)
        async def settings(interaction: discord.Interaction, layer: str) -> None:
            await interaction.response.send_message(f"layer set to {layer}", ephemeral=True)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(AgainButton)
        self.add_view(self.wave_view)
        await self.tree.sync()
        await self.tree.sync(guild=discord.Object(self.guild_id))

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        pass  # discord.py sleeps 5 s here before every IDENTIFY but the first

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        self.seen.append((message.content, len(message.attachments)))
        mentioned = self.user in message.mentions or message.guild is None
        if mentioned and message.attachments:
            data = await message.attachments[0].read()
            self.downloaded.append(data)
            await message.reply("here is your dream", file=discord.File(io.BytesIO(data[::-1]), filename="dream.jpg"))


@pytest_asyncio.fixture
async def bot(fake_discord: FakeDiscord):
    client = ToyBot(int(fake_discord.guild.id))
    async with fake_discord.run_client(client):
        yield client


async def test_login_sync_and_gateway(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    assert bot.user is not None and str(bot.user.id) == fake_discord.bot.id
    assert str(bot.application_id) == fake_discord.application_id
    keys = [r.route for r in fake_discord.requests]
    assert keys[:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    assert "PUT /applications/{app_id}/commands" in keys
    assert "PUT /applications/{app_id}/guilds/{guild_id}/commands" in keys

    global_cmds = fake_discord.registered_commands()
    assert set(global_cmds) == {"dream", "hello", "slow", "later", "feedback"}
    image, steps = global_cmds["dream"]["options"]
    assert (image["name"], image["type"], image["required"]) == ("image", 11, True)
    assert (steps["type"], steps["min_value"], steps["max_value"], steps["autocomplete"]) == (4, 1, 50, True)
    guild_cmds = fake_discord.registered_commands(fake_discord.guild)
    assert guild_cmds["settings"]["default_member_permissions"] == str(1 << 5)

    assert fake_discord.identify_count == 1
    guild = bot.get_guild(int(fake_discord.guild.id))
    assert guild is not None and guild.name == "Dream Lab"
    assert {c.name for c in guild.text_channels} == {"general", "dreams"}
    assert guild.me is not None and guild.me.guild_permissions.attach_files


async def test_invalid_command_definitions_are_rejected(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    bad = {"name": "Dream Now", "description": "x" * 101, "type": 1}
    with pytest.raises(discord.HTTPException) as info:
        await bot.http.bulk_upsert_global_commands(bot.application_id, payload=[bad])
    assert (info.value.status, info.value.code) == (400, 50035)
    assert set(info.value._errors["0"]) == {"name", "description"}
    assert "dream" in fake_discord.registered_commands()  # a rejected PUT changes nothing

    def errors(cmd: dict) -> dict:
        errs = FormErrors()
        validate_command(cmd, errs)
        return errs.errors

    opt = {"name": "a", "description": "a", "type": 3}
    assert errors({"name": "ok", "description": "d", "options": [opt, {**opt, "name": "b", "required": True}]})
    assert errors({"name": "ok", "description": "d", "options": [{**opt, "autocomplete": True, "choices": []}]})
    assert errors({"name": "ok", "description": "d", "options": [{**opt, "type": 12}]})
    assert errors({"name": "ok", "description": "d", "options": [{**opt, "name": f"o{i}"} for i in range(26)]})
    assert not errors(
        {"name": "ok-name_2", "description": "d", "options": [{**opt, "required": True}, {**opt, "name": "b"}]}
    )


async def test_slash_command_with_attachment(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    record = await fake_discord.send_slash_command("dream", {"steps": 5}, attachments={"image": ("cat.png", PNG)})
    (followup,) = await record.wait_followups(1)

    assert bot.downloaded == [PNG]
    assert record.response_type == 5 and not record.expired
    assert record.original is not None and record.original.content == "dreaming cat.png for 5 steps"
    assert not record.original.loading and record.original.edited
    assert followup.content == "done"
    (att,) = followup.attachments
    assert (att.filename, att.data, att.content_type) == ("dream.png", PNG[::-1], "image/png")
    assert followup.custom_ids == ["again:1"]
    assert record.events == ["callback:5", "edit_original", "followup"]

    callback, edit, post = record.requests
    assert callback.query == {"with_response": "1"} and callback.json == {"type": 5}
    assert edit.method == "PATCH" and edit.path.endswith("/messages/@original")
    assert post.multipart and post.json["attachments"] == [{"id": 0, "filename": "dream.png"}]
    assert [(f.index, f.filename, f.data) for f in post.files] == [(0, "dream.png", PNG[::-1])]

    # what a user typing the command could not send is refused before it reaches the bot
    with pytest.raises(ValueError, match="out of range"):
        await fake_discord.send_slash_command("dream", {"steps": 99}, attachments={"image": ("a.png", PNG)})
    with pytest.raises(ValueError, match="missing required"):
        await fake_discord.send_slash_command("dream", {"steps": 5})
    with pytest.raises(ValueError, match="lacks the permissions"):
        await fake_discord.send_slash_command("settings", {"layer": "x"}, user=fake_discord.user)
    admin = await fake_discord.send_slash_command("settings", {"layer": "x"}, user=fake_discord.admin)
    await admin.wait_ack()
    assert admin.original is not None and admin.original.ephemeral and admin.original.content == "layer set to x"


async def test_autocomplete(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    record = await fake_discord.send_autocomplete("dream", {"steps": "1"}, focused="steps")
    await record.wait_ack()
    assert record.response_type == 8
    assert record.autocomplete_choices == [{"name": "10 steps", "value": 10}]


async def test_mention_with_image_gets_a_reply_with_a_file(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    quiet = await fake_discord.post_message(
        content="nobody asked you", mentions_bot=False, attachments=[("a.jpg", JPEG)]
    )
    asked = await fake_discord.post_message(content="dream this", attachments=[("rocket.jpg", JPEG, "image/jpeg")])
    reply = await fake_discord.wait_for_message(lambda m: m.attachments)

    # without the message-content intent, content and attachments arrive only when the bot is mentioned
    assert bot.seen == [("", 0), (f"<@{fake_discord.bot.id}> dream this", 1)]
    assert quiet.content == "nobody asked you"
    assert bot.downloaded == [JPEG]
    assert reply.payload["message_reference"]["message_id"] == asked.id
    assert reply.content == "here is your dream"
    assert reply.attachments[0].data == JPEG[::-1]

    # a DM needs no mention
    dm = fake_discord.dm_channel(fake_discord.user)
    await fake_discord.post_message(dm, "dm dream", mentions_bot=False, attachments=[("r.jpg", JPEG)])
    dm_reply = await fake_discord.wait_for_message(channel=dm)
    assert dm_reply.attachments[0].data == JPEG[::-1]


async def test_buttons_reach_view_and_dynamic_item(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    hello = await fake_discord.send_slash_command("hello")
    await hello.wait_ack()
    assert hello.response_type == 4 and hello.original is not None
    assert hello.original.custom_ids == ["hello:wave"]

    press = await fake_discord.click_button(hello.original, "hello:wave", user=fake_discord.admin)
    await press.wait_ack()
    assert bot.wave_view.pressed_by == [int(fake_discord.admin.id)]
    assert press.response_type == 7
    assert hello.original.content == "alice waved" and hello.original.components == []

    dream = await fake_discord.send_slash_command("dream", attachments={"image": ("a.png", PNG)})
    (followup,) = await dream.wait_followups(1)
    again = await fake_discord.click_button(followup, "again:1")
    await again.wait_ack()
    assert again.original is not None and again.original.ephemeral and again.original.content == "again 1"

    with pytest.raises(ValueError, match="no button"):
        await fake_discord.click_button(followup, "again:2")


async def test_modal(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    record = await fake_discord.send_slash_command("feedback")
    await record.wait_ack()
    assert record.response_type == 9 and record.modal is not None
    submitted = await fake_discord.submit_modal(record, {"feedback:text": "lovely swirls"})
    await submitted.wait_ack()
    assert submitted.original is not None and submitted.original.content == "thanks: lovely swirls"


async def test_validation_errors_reach_the_bot(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    channel = bot.get_channel(int(fake_discord.channel.id))
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as info:
        await channel.send("x" * 2001)
    assert (info.value.status, info.value.code) == (400, 50035)
    assert "content" in info.value._errors

    fake_discord.guild.upload_limit = 100_000
    with pytest.raises(discord.HTTPException) as info:
        await channel.send(file=discord.File(io.BytesIO(PNG), filename="big.png"))
    assert (info.value.status, info.value.code) == (413, 40005)

    view = discord.ui.View()
    view.add_item(discord.ui.Button(label="x" * 81, custom_id="long"))
    with pytest.raises(discord.HTTPException) as info:
        await channel.send("hi", view=view)
    assert info.value.code == 50035 and "components" in info.value._errors
    assert fake_discord.bot_messages() == []


async def test_double_acknowledge_and_late_answers(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    hello = await fake_discord.send_slash_command("hello")
    await hello.wait_ack()
    async with aiohttp.ClientSession() as session:
        adapter = async_context.get()
        with pytest.raises(discord.HTTPException) as info:
            params = interaction_response_params(type=5)
            await adapter.create_interaction_response(int(hello.id), hello.token, session=session, params=params)
    assert (info.value.status, info.value.code) == (400, 40060)

    fake_discord.ack_timeout = 0.2
    slow = await fake_discord.send_slash_command("slow")
    await slow.wait_for(lambda r: r.expired, timeout=2)
    bot.release.set()
    await fake_discord.wait_for(lambda f: bot.errors)
    assert isinstance(bot.errors[0], discord.NotFound) and bot.errors[0].code == 10062
    assert not slow.acknowledged


async def test_expired_token_refuses_followups(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    record = await fake_discord.send_slash_command("later")
    await record.wait_for(lambda r: "followup_edited_original" in r.events)
    assert record.original is not None and record.original.content == "first" and record.followups == []

    fake_discord.advance_time(15 * 60 + 1)
    bot.release.set()
    await fake_discord.wait_for(lambda f: bot.errors)
    assert (bot.errors[0].status, bot.errors[0].code) == (401, 50027)


async def test_rate_limit_is_retried(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    channel = bot.get_channel(int(fake_discord.channel.id))
    assert isinstance(channel, discord.TextChannel)
    fake_discord.rate_limit("POST /channels/*/messages", times=1, retry_after=0.05)
    message = await channel.send("hi")
    sends = fake_discord.find_requests("POST /channels/*/messages")
    assert [r.status for r in sends] == [429, 200]
    assert str(message.id) == fake_discord.bot_messages()[0].id

    fake_discord.rate_limit("POST /webhooks/*", times=1, retry_after=0.05)
    record = await fake_discord.send_slash_command("dream", attachments={"image": ("a.png", PNG)})
    await record.wait_followups(1)
    assert [r.status for r in fake_discord.find_requests("POST /webhooks/*")] == [429, 200]


async def test_gateway_reconnect(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    await fake_discord.disconnect_client()
    await fake_discord.wait_for(lambda f: f.resume_count == 1 and f._conn is not None)
    record = await fake_discord.send_slash_command("hello")
    await record.wait_ack()

    await fake_discord.disconnect_client(allow_resume=False)
    await fake_discord.wait_for(lambda f: f.identify_count == 2 and f._conn is not None)
    record = await fake_discord.send_slash_command("hello")
    await record.wait_ack()
    assert record.response_type == 4


async def test_everyday_calls(fake_discord: FakeDiscord, bot: ToyBot) -> None:
    channel = bot.get_channel(int(fake_discord.channel.id))
    assert isinstance(channel, discord.TextChannel)
    message = await channel.send("one", embed=discord.Embed(title="t").add_field(name="n", value="v"))
    message = await message.edit(content="two")
    await message.add_reaction("\N{THUMBS UP SIGN}")
    async with channel.typing():
        pass
    assert (await channel.fetch_message(message.id)).content == "two"
    assert [m.id async for m in channel.history(limit=5)] == [message.id]
    member = await (await bot.fetch_guild(int(fake_discord.guild.id))).fetch_member(int(fake_discord.admin.id))
    assert member.guild_permissions.manage_guild
    reply = await message.reply("replying")
    assert reply.reference is not None and reply.reference.message_id == message.id
    await message.delete()
    stored = fake_discord.messages[str(message.id)]
    assert stored.deleted and stored.reactions == ["\N{THUMBS UP SIGN}"] and stored.history[0]["content"] == "one"

    user = await bot.fetch_user(int(fake_discord.user.id))
    dm = await user.send("psst", file=discord.File(io.BytesIO(PNG), "p.png"))
    assert dm.attachments[0].size == len(PNG) and dm.attachments[0].width == 451

    theirs = await fake_discord.post_message(content="not for you", mentions_bot=False)
    fetched = await channel.fetch_message(int(theirs.id))
    assert fetched.content == ""  # no message-content intent
    with pytest.raises(discord.Forbidden):
        await fetched.delete()  # no MANAGE_MESSAGES


async def test_privileged_intents_need_approval() -> None:
    async with FakeDiscord() as fake:
        client = discord.Client(intents=discord.Intents.all(), guild_ready_timeout=0.05)
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with fake.run_client(client):
                pass

    async with FakeDiscord(privileged_intents=("message_content",)) as fake:
        intents = discord.Intents.default()
        intents.message_content = True
        client = discord.Client(intents=intents, guild_ready_timeout=0.05)
        seen: list[str] = []

        @client.event
        async def on_message(message: discord.Message) -> None:
            seen.append(message.content)

        async with fake.run_client(client):
            await fake.post_message(content="no mention needed", mentions_bot=False)
            await fake.wait_for(lambda f: seen)
        assert seen == ["no mention needed"]
        fake.check()


async def test_fixture_restores_discord_py() -> None:
    before = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with FakeDiscord() as fake:
        assert fake.api_base == discord.http.Route.BASE
    assert before == (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
