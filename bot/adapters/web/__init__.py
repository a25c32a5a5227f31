"""The built-in web page: upload a photo or name a class, watch it dream, browse recent dreams."""

from bot.adapters.web.app import AccessLogger, create_web_app

__all__ = ["AccessLogger", "create_web_app"]
