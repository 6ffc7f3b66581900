"""Control endpoints under /__sandbox/ (no auth, no rate limits, no faults).

GET  /__sandbox/config                 the config in force (API keys left out)
POST /__sandbox/config                 {"error_rate": 0.1, ...}: change it while running
POST /__sandbox/reset                  forget everything; {"restore_config": true} also
                                       undoes config changes
GET  /__sandbox/stats                  requests by family and status, jobs by status,
                                       profiles per list, 429s, max concurrency
GET  /__sandbox/lists/{id}/emails      {"list_id", "count", "emails": [sorted]}
GET  /__sandbox/lists/{id}/members     {"list_id", "count", "members": [{"id", "email",
                                       "joined_group_at", "joined_at"}]}, by e-mail
POST /__sandbox/lists/{id}/members     {"emails": [...], "joined_at": ISO or epoch s}:
                                       "sign-up form" members, outside any export
DELETE /__sandbox/lists/{id}/members   {"emails": [...]}: off the list (an unsubscribe)
GET  /__sandbox/jobs/{id}              a job's status, counts and errors
POST /__sandbox/jobs/{id}/expire       the job reaches its expires_at (404 from then on)
GET  /__sandbox/profiles?email=...     a profile: id, attributes, consent, lists
GET  /__sandbox/requests               recorded /api requests (record_requests=True)
DELETE /__sandbox/requests             forget them
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from .config import FAMILIES, SandboxConfig

__all__ = ["add_control_routes", "config_as_json"]


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(document), status=status, content_type="application/json")


def config_as_json(config: SandboxConfig) -> dict[str, Any]:
    """The config as plain JSON; API keys are counted, not shown."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "accounts":
            value = [
                {
                    "name": a.name,
                    "api_keys": len(a.api_keys),
                    "lists": [{"id": lst.id, "name": lst.name} for lst in a.lists],
                }
                for a in value
            ]
        elif isinstance(value, frozenset):
            value = sorted(value)
        elif f.name == "rate_limit_overrides":
            value = {k: dataclasses.asdict(v) for k, v in value.items()}
        out[f.name] = value
    out["rate_limits_in_force"] = {
        family: dataclasses.asdict(config.rate_limit(family)) for family in FAMILIES
    }
    return out


def _epoch_seconds(value: Any) -> float | None:
    """``joined_at`` as epoch seconds: a number, an ISO 8601 string, or None (now)."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    raise TypeError("'joined_at' must be epoch seconds or an ISO 8601 datetime")


def add_control_routes(app: web.Application, runtime_key: web.AppKey[Any]) -> None:
    """Register the /__sandbox/ routes on ``app``; the runtime is read from ``runtime_key``."""

    async def get_config(request: web.Request) -> web.Response:
        return _json(config_as_json(request.app[runtime_key].config))

    async def post_config(request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
            if not isinstance(changes, dict):
                raise TypeError("the body must be a JSON object of config fields")
            config = request.app[runtime_key].configure(changes)
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, status=400)
        return _json(config_as_json(config))

    async def reset(request: web.Request) -> web.Response:
        raw = await request.read()
        options = orjson.loads(raw) if raw.strip() else {}
        request.app[runtime_key].reset(restore_config=bool(options.get("restore_config")))
        return _json({"reset": True})

    async def stats(request: web.Request) -> web.Response:
        return _json(request.app[runtime_key].stats_dict())

    async def list_emails(request: web.Request) -> web.Response:
        list_id = request.match_info["id"]
        try:
            emails = request.app[runtime_key].state.list_emails(list_id)
        except KeyError:
            return _json({"error": f"no list {list_id!r}"}, status=404)
        return _json({"list_id": list_id, "count": len(emails), "emails": emails})

    async def members(request: web.Request) -> web.Response:
        list_id = request.match_info["id"]
        state = request.app[runtime_key].state
        if request.method not in ("GET", "POST", "DELETE"):
            return _json({"error": "use GET, POST or DELETE"}, status=405)
        try:
            if request.method == "GET":
                found = state.members(list_id)
                return _json({"list_id": list_id, "count": len(found), "members": found})
            body = orjson.loads(await request.read())
            emails = body["emails"]
            if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
                raise TypeError("'emails' must be an array of strings")
            if request.method == "DELETE":
                return _json({"list_id": list_id, "removed": state.remove_members(list_id, emails)})
            joined = _epoch_seconds(body.get("joined_at"))
            added = state.add_members(list_id, emails, joined)
        except KeyError as exc:
            missing = exc.args[0] if exc.args else list_id
            return _json({"error": f"no list {list_id!r} or no field {missing!r}"}, status=404)
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return _json({"error": str(exc)}, status=400)
        return _json({"list_id": list_id, "added": added})

    async def expire(request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        try:
            request.app[runtime_key].state.expire_job(job_id)
        except KeyError:
            return _json({"error": f"no job {job_id!r}"}, status=404)
        return web.Response(status=204)

    async def job(request: web.Request) -> web.Response:
        job_id = request.match_info["id"]
        try:
            return _json(request.app[runtime_key].state.job(job_id))
        except KeyError:
            return _json({"error": f"no job {job_id!r}"}, status=404)

    async def profile(request: web.Request) -> web.Response:
        found = request.app[runtime_key].state.profile(request.query.get("email", ""))
        return _json(found, status=200) if found else _json({"error": "no profile"}, status=404)

    async def requests(request: web.Request) -> web.Response:
        runtime = request.app[runtime_key]
        return _json(
            {"recording": runtime.config.record_requests, "requests": runtime.recorded.entries()}
        )

    async def forget_requests(request: web.Request) -> web.Response:
        request.app[runtime_key].recorded.clear()
        return web.Response(status=204)

    app.router.add_get("/__sandbox/config", get_config)
    app.router.add_post("/__sandbox/config", post_config)
    app.router.add_post("/__sandbox/reset", reset)
    app.router.add_get("/__sandbox/stats", stats)
    app.router.add_get("/__sandbox/lists/{id}/emails", list_emails)
    app.router.add_route("*", "/__sandbox/lists/{id}/members", members)
    app.router.add_get("/__sandbox/jobs/{id}", job)
    app.router.add_post("/__sandbox/jobs/{id}/expire", expire)
    app.router.add_get("/__sandbox/profiles", profile)
    app.router.add_get("/__sandbox/requests", requests)
    app.router.add_delete("/__sandbox/requests", forget_requests)
