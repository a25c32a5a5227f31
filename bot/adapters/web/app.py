"""The built-in web page and its JSON API: an adapter, like the chat ones, that translates and holds no queue logic.

``create_web_app(service, config)`` returns an aiohttp application; whoever runs it (``bot.app``) binds it to
``config.web.host`` and ``port``. Everything the handlers need is on the application (no module state), and the
page itself is static files that read ``/api/modes`` to build their form.

Who is who: every browser gets an anonymous random id in an HttpOnly cookie on its first visit, so per-person queue
limits and "cancel your own dream" work per browser. When the page listens on anything but loopback, every route but
``/healthz`` also needs the access token (``Authorization: Bearer``, or ``?token=`` once, which leaves a cookie).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import Morsel
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from bot.adapters.web import metrics
from bot.config import Config, is_loopback
from bot.jobqueue import JobNotCancellable, JobNotFound, PermissionDenied, QueueError, QueueRefused
from bot.media import MediaError, file_size
from bot.options import MODES, OptionError, build_command, check_network, describe_modes
from bot.requests import Destination, DreamRequest, Requester
from bot.service import DreamService, JobView
from bot.store import media_type
from dreamcore.networks import layer_catalog, list_networks
from dreamcore.settings import PRESETS, preset_objective

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
VISITOR_COOKIE = "dreambot_visitor"
ACCESS_COOKIE = "dreambot_access"
VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
UPLOAD_HEADROOM = 256 * 1024  # form fields and multipart framing on top of the largest photo
ONE_YEAR = 365 * 24 * 3600
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Access:
    """The access token's rules; ``token`` is "" when the page listens on loopback and needs none."""

    token: str

    @property
    def required(self) -> bool:
        return bool(self.token)

    @property
    def cookie_value(self) -> str:
        """What the access cookie holds: derived from the token, so the token itself never travels back."""
        return hmac.new(self.token.encode(), b"dreambot web access cookie", hashlib.sha256).hexdigest()

    def matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())

    def allows(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.matches(given.strip()):
            return True
        return hmac.compare_digest(request.cookies.get(ACCESS_COOKIE, "").encode(), self.cookie_value.encode())


SERVICE = web.AppKey("service", DreamService)
CONFIG = web.AppKey("config", Config)
ACCESS = web.AppKey("access", Access)
STREAMS = web.AppKey("streams", set)  # the tasks serving event streams, ended at shutdown
VISITOR = web.RequestKey("visitor", str)  # this browser's anonymous id
NEW_VISITOR = web.RequestKey("new_visitor", bool)  # made for this request: the cookie goes out with the answer


def create_web_app(service: DreamService, config: Config) -> web.Application:
    """The web page and API for ``service``; bind it to ``config.web.host``:``port`` (loopback by default)."""
    if not is_loopback(config.web.host) and not config.secrets.web_token:
        raise ValueError(f"web.host {config.web.host!r} is reachable from other machines: set DREAMBOT_WEB_TOKEN.")
    access = Access("" if is_loopback(config.web.host) else config.secrets.web_token)
    app = web.Application(
        client_max_size=service.media_limits.max_bytes + UPLOAD_HEADROOM,
        middlewares=[_errors, _access_check, _same_origin, _visitor],
    )
    app[SERVICE] = service
    app[CONFIG] = config
    app[ACCESS] = access
    app[STREAMS] = set()
    app.on_response_prepare.append(_headers_and_cookies)
    app.on_shutdown.append(_end_streams)

    routes = app.router
    routes.add_get("/", page)
    routes.add_static("/static", STATIC_DIR)
    routes.add_get("/api/modes", modes)
    routes.add_get("/api/layers", layers)
    routes.add_post("/api/jobs", submit)
    routes.add_get("/api/jobs/{id}", job)
    routes.add_get("/api/jobs/{id}/events", events)
    routes.add_get("/api/jobs/{id}/preview.jpg", preview)
    routes.add_post("/api/jobs/{id}/cancel", cancel)
    routes.add_post("/api/jobs/{id}/again", again)
    routes.add_post("/api/jobs/{id}/like", like)
    routes.add_get("/api/gallery", gallery)
    routes.add_get("/files/{key}", file)
    routes.add_get("/healthz", healthz)
    routes.add_get("/metrics", metrics_page)
    return app


# ---------------------------------------------------------------------------------------------------- handlers


async def page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def modes(request: web.Request) -> web.Response:
    """Everything the form is built from: modes and their options, presets, networks and limits."""
    config = request.app[CONFIG]
    offered = request.app[SERVICE].networks()  # only networks this bot can use (bot/networks.py)
    # The layer lists come from building each network's catalog: tens of milliseconds, off the loop.
    described = await asyncio.get_running_loop().run_in_executor(None, describe_modes, offered)
    return web.json_response(
        {
            "modes": described,
            "presets": [{"name": p.name, "description": p.description} for p in PRESETS.values()],
            "networks": [
                {"name": spec.name, "description": spec.description} for spec in list_networks() if spec.name in offered
            ],
            "limits": {"max_upload_mb": config.media.max_upload_mb, "working_side": config.media.working_side},
        }
    )


async def layers(request: web.Request) -> web.Response:
    """A network's layers for the picker, each with a picture of what it does where one is shipped."""
    network = check_network(request.query.get("network") or "lite0")
    catalog = await asyncio.get_running_loop().run_in_executor(None, layer_catalog, network)
    return web.json_response(
        {
            "network": network,
            "layers": [
                {
                    "name": layer.name,
                    "channels": layer.channels,
                    "stride": layer.stride,
                    "description": layer.description,
                    "aliases": list(layer.aliases),
                    "thumbnail": _thumbnail(network, layer.name),
                }
                for layer in catalog.layers
            ],
            "preset_layers": {name: preset_objective(p, network, catalog.names()) for name, p in PRESETS.items()},
        }
    )


async def submit(request: web.Request) -> web.Response:
    """A new dream from the form: mode, subject, options by name, and the photo as ``image``."""
    fields = await _read_form(request)
    mode = str(fields.pop("mode", "") or "dream")
    subject = str(fields.pop("subject", ""))
    name = str(fields.pop("name", ""))
    image = fields.pop("image", None)
    share = str(fields.pop("share", "")).lower() in ("on", "true", "1", "yes")  # the tick box: may be picked daily
    command = build_command(mode, subject, fields, networks=request.app[SERVICE].networks())
    if not MODES[command.mode].needs_image:
        image = None  # a picture from nothing: a photo sent along is not kept
    elif image is None:
        raise OptionError(f"{command.mode} needs a photo: choose or drop one (PNG, JPEG, WebP or GIF), then dream.")
    dream_request = DreamRequest(command, _requester(request, name), Destination("web"), image=image)
    view = await request.app[SERVICE].submit(dream_request)
    if share:
        request.app[SERVICE].sharing.share(view.id, _visitor_key(request))
    return _view_response(view, status=201)


async def job(request: web.Request) -> web.Response:
    return _view_response(await request.app[SERVICE].view(request.match_info["id"]))


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the job's view as JSON at every change, until it has finished."""
    service = request.app[SERVICE]
    job_id = request.match_info["id"]
    await service.view(job_id)  # an unknown id is a 404 before the stream starts
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    streams = request.app[STREAMS]
    task = asyncio.current_task()
    streams.add(task)
    try:
        await response.write(b"retry: 3000\n\n")
        async with contextlib.aclosing(service.subscribe(job_id)) as views:
            async for view in views:
                await response.write(f"data: {json.dumps(_public(view))}\n\n".encode())
    except ConnectionResetError:
        pass  # the page went away
    except QueueError as error:  # the job was removed while someone watched it
        log.info("stream of job %s ended: %s", job_id, error)
    finally:
        streams.discard(task)
    return response


async def preview(request: web.Request) -> web.Response:
    data = request.app[SERVICE].previews.get(request.match_info["id"])
    if data is None:
        raise Problem(404, "There is no preview of that dream (yet).")
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def cancel(request: web.Request) -> web.Response:
    view = await request.app[SERVICE].cancel(request.match_info["id"], by_user=_visitor_key(request))
    return _view_response(view)


async def again(request: web.Request) -> web.Response:
    """Dream a finished job again: same photo and options, a new seed; a JSON body may change options."""
    service = request.app[SERVICE]
    original = await service.request_of(request.match_info["id"])
    changes = await _json_object(request)
    options = {key: value for key, value in original.command.options.items() if key != "seed"}
    if not isinstance(changes.get("options", {}), dict):
        raise OptionError('Send the options to change as an object, e.g. {"options": {"layer": "block10"}}.')
    options.update(changes.get("options", {}))
    if "seed" in {o.name for o in MODES[original.command.mode].options} and "seed" not in options:
        # A new seed makes a new dream; without one, the same request would be answered from the cache.
        options["seed"] = secrets.randbelow(2**31)
    subject = str(changes.get("subject", original.command.subject))
    command = build_command(original.command.mode, subject, options, networks=service.networks())
    if original.image_key and not service.store.exists(original.image_key):
        raise Problem(410, "The photo of that dream has been cleared away; upload it again to dream it.")
    new = DreamRequest(command, _requester(request, str(changes.get("name", ""))), Destination("web"))
    view = await service.submit(new.with_image_key(original.image_key))
    return _view_response(view, status=201)


async def gallery(request: web.Request) -> web.Response:
    """Recent public dreams; the latest dream of the day first, marked with its schedule's name."""
    service = request.app[SERVICE]
    views = await service.gallery()
    jobs = [_public(view) for view in views]
    top = await service.featured() if service.featured is not None else None
    if top is not None:
        first = {**_public(top["view"]), "schedule": top["schedule"], "schedule_caption": top["caption"]}
        jobs = [first, *(job for job in jobs if job["id"] != first["id"])]
    for job in jobs:
        job["likes"] = service.sharing.likes(job["id"])
        job["shared"] = service.sharing.is_shared(job["id"])
    return web.json_response({"jobs": jobs})


async def like(request: web.Request) -> web.Response:
    """One like per browser; the most-liked shared dream of the day can be posted by a schedule."""
    service = request.app[SERVICE]
    view = await service.view(request.match_info["id"])  # an unknown id is a 404
    return web.json_response({"id": view.id, "likes": service.sharing.like(view.id, _visitor_key(request))})


async def file(request: web.Request) -> web.StreamResponse:
    key = request.match_info["key"]
    try:
        path = request.app[SERVICE].store.path(key)
    except KeyError:
        raise Problem(404, "There is no file with that name.") from None
    if not path.is_file():
        raise Problem(404, "That file has been cleared away.")
    headers = {"Content-Type": media_type(key), "Cache-Control": "public, max-age=31536000, immutable"}
    return web.FileResponse(path, headers=headers)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, **await request.app[SERVICE].status()})


async def metrics_page(request: web.Request) -> web.Response:
    text = await metrics.render_service(request.app[SERVICE])
    return web.Response(body=text.encode(), headers={"Content-Type": metrics.CONTENT_TYPE})


# ---------------------------------------------------------------------------------------------------- helpers


def _public(view: JobView) -> dict[str, Any]:
    """A job as the page sees it: the destination (another platform's reply address) stays inside."""
    data = view.to_dict()
    data.pop("destination", None)
    return data


def _view_response(view: JobView, status: int = 200) -> web.Response:
    return web.json_response(_public(view), status=status)


def _thumbnail(network: str, layer: str) -> str | None:
    if not (SAFE_NAME.match(network) and SAFE_NAME.match(layer)):
        return None
    if (STATIC_DIR / "layers" / network / f"{layer}.jpg").is_file():
        return f"/static/layers/{network}/{layer}.jpg"
    return None


def _cookie(name: str, value: str, *, secure: bool) -> str:
    """A Set-Cookie value: HttpOnly, SameSite=Lax, for a year, the whole site."""
    morsel: Morsel[str] = Morsel()
    morsel.set(name, value, value)
    morsel.update({"path": "/", "max-age": str(ONE_YEAR), "httponly": True, "samesite": "Lax", "secure": secure})
    return morsel.OutputString()


def _visitor_key(request: web.Request) -> str:
    return f"web:{request[VISITOR]}"


def _requester(request: web.Request, name: str) -> Requester:
    display = " ".join(name.split())[:40] or "web visitor"
    return Requester("web", request[VISITOR], display)


class Problem(Exception):
    """An answer other than success, raised by a handler: a status and a sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UploadTooLarge(Exception):
    """The body passed client_max_size before the service could look at it."""


async def _read_form(request: web.Request) -> dict[str, Any]:
    """The form's fields, files as bytes (an empty file input is no file)."""
    if request.content_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise OptionError("Send the dream as a form (multipart/form-data), with the photo in the field 'image'.")
    try:
        data = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise UploadTooLarge() from None
    except ValueError:
        raise OptionError("That form could not be read; reload the page and try again.") from None
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, web.FileField):
            fields[key] = await asyncio.get_running_loop().run_in_executor(None, value.file.read)
        elif key != "image" or value:  # a text field named image (an empty file input) is no image
            fields[key] = value
    return fields


async def _json_object(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise OptionError('The body must be JSON, e.g. {"options": {"layer": "block10"}}.') from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise OptionError('The body must be a JSON object, e.g. {"options": {"layer": "block10"}}.')
    return body


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith(("/api/", "/files/")) or request.path in ("/healthz", "/metrics")


HTTP_SENTENCES = {
    404: "There is nothing at that address.",
    405: "That address does not take {method} requests.",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---------------------------------------------------------------------------------------------------- middlewares


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as ``{"error": sentence}`` with a fitting status; the sentences come from where they were raised."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400 or not _wants_json(request):
            raise
        return _error(error.status, HTTP_SENTENCES.get(error.status, f"{error.reason}.").format(method=request.method))
    except Problem as problem:
        return _error(problem.status, problem.message)
    except UploadTooLarge:
        limit = file_size(request.app[SERVICE].media_limits.max_bytes)
        return _error(413, f"That upload is larger than {limit}; send a smaller photo (PNG, JPEG, WebP or GIF).")
    except (OptionError, MediaError) as error:
        return _error(400, str(error))
    except QueueRefused as error:
        return _error(429, str(error), {"Retry-After": str(max(1, math.ceil(error.retry_after)))})
    except JobNotFound as error:
        return _error(404, str(error))
    except PermissionDenied as error:
        return _error(403, str(error))
    except (JobNotCancellable, QueueError) as error:
        return _error(409, str(error))
    except Exception:
        log.exception("the web page failed on %s %s", request.method, request.path)
        return _error(500, "Something went wrong on our side; please try again in a moment.")


@web.middleware
async def _access_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Off loopback, everything but /healthz needs the token; ``?token=`` once leaves a cookie and is removed."""
    access = request.app[ACCESS]
    if not access.required or request.path == "/healthz":
        return await handler(request)
    given = request.query.get("token")
    if given is not None:
        if not access.matches(given):
            return _unauthorized(request)
        clean = request.rel_url.with_query([(k, v) for k, v in request.rel_url.query.items() if k != "token"])
        headers = {
            "Location": str(clean),
            "Cache-Control": "no-store",
            "Set-Cookie": _cookie(ACCESS_COOKIE, access.cookie_value, secure=request.secure),
        }
        return web.Response(status=303, headers=headers)
    if access.allows(request):
        return await handler(request)
    return _unauthorized(request)


def _unauthorized(request: web.Request) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="dreambot"'}
    if _wants_json(request):
        return _error(
            401,
            "This DreamBot needs its access token: open the link you were given (it ends in ?token=...), "
            "or send the header Authorization: Bearer <token>.",
            headers,
        )
    html = (
        "<!doctype html><meta charset=utf-8><title>DreamBot</title>"
        "<p>This DreamBot page needs its access link: open the link you were given (it ends in "
        "<code>?token=...</code>), or ask whoever runs it for one.</p>"
    )
    return web.Response(status=401, text=html, content_type="text/html", headers=headers)


@web.middleware
async def _same_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Forms posted from other sites are refused (a browser names the page it posts from in ``Origin``)."""
    origin = request.headers.get("Origin")
    if request.method in UNSAFE_METHODS and origin is not None:
        allowed = {request.host}
        public = request.app[CONFIG].web.public_url
        if public:
            allowed.add(urlsplit(public).netloc)
        if urlsplit(origin).netloc not in allowed:
            return _error(403, "Dreams can only be asked for from this site's own page; open it and try there.")
    return await handler(request)


@web.middleware
async def _visitor(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each browser's anonymous id, from its cookie or made now (the cookie is set as the response goes out)."""
    visitor = request.cookies.get(VISITOR_COOKIE, "")
    if not VISITOR_ID.match(visitor):
        visitor = secrets.token_urlsafe(18)
        request[NEW_VISITOR] = True
    request[VISITOR] = visitor
    return await handler(request)


async def _headers_and_cookies(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.get(NEW_VISITOR):
        # Added as a header: by the time this hook runs, response.set_cookie() would be too late.
        headers.add("Set-Cookie", _cookie(VISITOR_COOKIE, request[VISITOR], secure=request.secure))


async def _end_streams(app: web.Application) -> None:
    for task in list(app[STREAMS]):
        task.cancel()


# ---------------------------------------------------------------------------------------------------- logging


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log without secrets: a ``token`` in the query is logged as ``***``.

    Pass it to the runner: ``web.AppRunner(app, access_log_class=AccessLogger)``.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.3fs', request.remote, request.method, redact(request.rel_url), response.status, time
        )


def redact(url: URL) -> str:
    if "token" not in url.query:
        return str(url)
    return str(url.with_query([(k, "***" if k == "token" else v) for k, v in url.query.items()]))
