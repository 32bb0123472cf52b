"""Upload dashboards to Grafana through its HTTP API, with ``grafana-client``.

For each dashboard: ``POST /api/dashboards/db`` with ``overwrite: true`` into the folder
(created first with ``POST /api/folders`` when ``GET /api/folders`` does not list it).
The uid is stable, so a second publish replaces the first. A dashboard that fails (a 412
version conflict, a 401, a 5xx, a network error) gets one clear line and the others still go;
the result says which failed, and ``ofsre dashboards publish`` exits non-zero if any did.
``/api/search`` is used afterwards to confirm each uid is listed in the folder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaException

__all__ = ["PublishResult", "publish", "connect"]


@dataclass
class PublishResult:
    published: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # uid -> reason

    @property
    def ok(self) -> bool:
        return not self.failed


def connect(url: str, *, token: str | None = None, basic_auth: str | None = None,
            timeout: float = 10.0) -> GrafanaApi:
    if token and basic_auth:
        raise ValueError("give --token or --basic-auth, not both")
    credential: str | tuple[str, str] | None = token
    if basic_auth:
        user, sep, password = basic_auth.partition(":")
        if not sep:
            raise ValueError("--basic-auth must be USER:PASSWORD")
        credential = (user, password)
    return GrafanaApi.from_url(url, credential=credential, timeout=timeout)


def _reason(exc: Exception) -> str:
    if isinstance(exc, GrafanaException):
        status = exc.status_code
        detail = exc.response.get("message") if isinstance(exc.response, dict) else exc.response
        if status == 412:
            return f"412 version conflict: {detail or 'the dashboard changed in Grafana'}"
        if status == 401:
            return "401 unauthorized: check --token or --basic-auth"
        if status:
            return f"{status}: {detail or exc.message}"
        return f"cannot reach Grafana: {exc.message}"
    if isinstance(exc, OSError):  # the HTTP library's connection errors (refused, DNS, TLS) are OSErrors
        return f"cannot reach Grafana: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


def ensure_folder(api: GrafanaApi, title: str) -> str:
    """The uid of the folder titled ``title``, created if missing."""
    for folder in api.folder.get_all_folders():
        if folder.get("title") == title:
            return folder["uid"]
    return api.folder.create_folder(title)["uid"]


def publish(api: GrafanaApi, dashboards: Mapping[str, dict], *, folder: str = "ofsre",
            progress: Callable[[str], None] = lambda _line: None) -> PublishResult:
    result = PublishResult()
    try:
        folder_uid = ensure_folder(api, folder)
    except Exception as exc:  # noqa: BLE001 - one line, and every dashboard counts as failed
        reason = f"folder {folder!r}: {_reason(exc)}"
        for d in dashboards.values():
            result.failed[d["uid"]] = reason
            progress(f"FAILED {d['uid']}: {reason}")
        return result
    for d in dashboards.values():
        uid = d["uid"]
        try:
            api.dashboard.update_dashboard({"dashboard": {**d, "id": None}, "folderUid": folder_uid,
                                            "overwrite": True, "message": "published by ofsre"})
        except Exception as exc:  # noqa: BLE001 - report and go on with the next dashboard
            result.failed[uid] = _reason(exc)
            progress(f"FAILED {uid}: {result.failed[uid]}")
            continue
        result.published.append(uid)
        progress(f"published {uid} ({d['title']})")
    if result.published:
        try:
            listed = {hit.get("uid") for hit in api.search.search_dashboards(folder_uids=[folder_uid],
                                                                             type_="dash-db")}
        except Exception as exc:  # noqa: BLE001
            progress(f"warning: could not confirm with /api/search: {_reason(exc)}")
        else:
            for uid in list(result.published):
                if uid not in listed:
                    result.published.remove(uid)
                    result.failed[uid] = "accepted but not listed by /api/search in the folder"
                    progress(f"FAILED {uid}: {result.failed[uid]}")
    return result
