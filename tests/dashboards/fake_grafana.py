"""A local HTTP server speaking the part of Grafana's HTTP API that ``ofsre dashboards publish`` uses.

Grafana itself cannot run here, so this server answers as Grafana's documentation describes
(grafana.com/docs/grafana/latest/developers/http_api/{folder,dashboard,folder_dashboard_search}):

* ``GET /api/folders`` → ``[{"id", "uid", "title"}]``; ``POST /api/folders`` ``{"title"}`` →
  the folder (409 "a folder with the same name already exists" if the title is taken);
* ``POST /api/dashboards/db`` ``{"dashboard", "folderUid", "overwrite"}`` → ``{"id", "uid",
  "url", "status": "success", "version", "slug"}``; a dashboard whose uid is in
  ``conflicts`` gets Grafana's **412** ``{"status": "version-mismatch", "message": …}``; a body
  without a dashboard title gets 400;
* ``GET /api/search?type=dash-db&folderUIDs=…`` → the dashboards stored in those folders;
* every request without the expected ``Authorization`` header gets **401**
  ``{"message": "Unauthorized"}``.

Every request is recorded (method, path, parsed JSON body, auth header) for the assertions.
"""

from __future__ import annotations

import base64
import threading

from ..http_stub import HttpStub, Reply, Request, json_reply


class FakeGrafana:
    def __init__(self, *, token: str | None = "s3cret", basic: tuple[str, str] | None = None) -> None:
        self.auth = (f"Bearer {token}" if token else
                     "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode())
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}   # uid -> {"dashboard", "folderUid", "version"}
        self.conflicts: set[str] = set()
        self.requests: list[tuple[str, str, object]] = []
        self._lock = threading.Lock()
        self.stub = HttpStub(self._respond, methods=("GET", "POST"), name="fake-grafana")
        self.url = self.stub.url

    def close(self) -> None:
        self.stub.close()

    # ----------------------------------------------------------------- API

    def _route(self, method: str, path: str, query: dict, body, auth: str | None) -> tuple[int, object]:
        with self._lock:
            self.requests.append((method, path, body))
            if auth != self.auth:
                return 401, {"message": "Unauthorized"}
            if (method, path) == ("GET", "/api/folders"):
                return 200, [{"id": f["id"], "uid": f["uid"],
                              "title": f["title"]} for f in self.folders.values()]
            if (method, path) == ("POST", "/api/folders"):
                title = (body or {}).get("title")
                if not title:
                    return 400, {"message": "folder title cannot be empty"}
                if any(f["title"] == title for f in self.folders.values()):
                    return 409, {"message": "a folder with the same name already exists"}
                uid = (body or {}).get("uid") or f"f{len(self.folders) + 1:04d}"
                folder = {"id": len(self.folders) + 1, "uid": uid, "title": title, "version": 1}
                self.folders[uid] = folder
                return 200, folder
            if (method, path) == ("POST", "/api/dashboards/db"):
                return self._save(body or {})
            if (method, path) == ("GET", "/api/search"):
                folders = set(query.get("folderUIDs", []))
                hits = [{"uid": uid, "title": d["dashboard"]["title"], "type": "dash-db",
                         "folderUid": d["folderUid"]}
                        for uid, d in self.dashboards.items() if not folders or d["folderUid"] in folders]
                return 200, hits
            return 404, {"message": "Not found"}

    def _save(self, body: dict) -> tuple[int, object]:
        dash = body.get("dashboard") or {}
        if not dash.get("title"):
            return 400, {"message": "Dashboard title cannot be empty", "status": "bad-request"}
        uid = dash.get("uid")
        if uid in self.conflicts:
            return 412, {"status": "version-mismatch",
                         "message": "The dashboard has been changed by someone else"}
        if uid in self.dashboards and not body.get("overwrite"):
            return 412, {"status": "name-exists",
                         "message": "A dashboard with the same name in the folder already exists"}
        if body.get("folderUid") and body["folderUid"] not in self.folders:
            return 400, {"message": "folder not found"}
        version = self.dashboards.get(uid, {}).get("version", 0) + 1
        self.dashboards[uid] = {"dashboard": dash, "folderUid": body.get("folderUid"), "version": version}
        return 200, {"id": len(self.dashboards), "uid": uid, "url": f"/d/{uid}/{uid}", "status": "success",
                     "version": version, "slug": uid}

    def _respond(self, request: Request) -> Reply:
        status, payload = self._route(request.method, request.route, request.query, request.json(),
                                      request.headers.get("authorization"))
        return json_reply(status, payload)
