"""Shared fixtures: ``fake_discord``, a fake Discord on loopback for discord.py end-to-end tests."""

from fake_discord import fake_discord  # noqa: F401
