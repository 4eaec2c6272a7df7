"""The console: Tend's web face for marketers and operations analysts.

A client of the three public APIs only (ingest, scoring, outreach) over HTTP with the signed-in
user's API key; it holds no customer data and reads no database. Server-rendered pages
(Jinja2) with a little htmx; every asset is served by the console itself.

Rooms, importing downward only: ``app`` → ``pages`` (routers, one per page) → ``clients``
(the API calls) and ``session`` (sign-in, cookie, CSRF) → ``formatting`` → ``settings``.
"""
