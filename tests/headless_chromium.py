"""A real browser for the page tests: Debian's chromium, headless, driven by the DevTools protocol
over a pipe (--remote-debugging-pipe: JSON messages separated by NUL bytes on file descriptors 3
and 4), so no websocket library and no driver binary are needed.

    with Chromium(profile_dir) as browser:
        visit = browser.open("file:///.../page.html")
        visit.requests, visit.console_errors, visit.screenshot  # PNG bytes

Every request the page makes is recorded, as is every console message of level error, every
uncaught exception and every failed load.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--remote-debugging-pipe"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Visit:
    url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    height: int = 0  # of the whole page, in CSS pixels


class Chromium:
    def __init__(self, profile: Path, timeout: float = 60.0):
        self.profile, self.timeout, self.next_id, self.buffer = Path(profile), timeout, 0, b""

    def __enter__(self) -> "Chromium":
        commands_read, self.commands = os.pipe()
        self.replies, replies_write = os.pipe()

        def descriptors():  # in the child: the protocol's two pipes become fds 3 and 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, replies_write)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen([chromium_path(), *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                        preexec_fn=descriptors, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(replies_write)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close")
        except (OSError, TimeoutError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.commands)
        os.close(self.replies)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             events: list | None = None) -> dict:
        """Send one command and wait for its answer; events that arrive meanwhile go to `events`."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if events is not None and "method" in reply:
                events.append(reply)

    def wait_for(self, method: str, events: list) -> None:
        while not any(event["method"] == method for event in events):
            events.append(self._receive())

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def open(self, url: str, width: int = 1280, height: int = 2000) -> Visit:
        """Load `url` in a new tab; record its requests and errors; screenshot its top `height` pixels."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        events: list[dict] = []
        for domain in ("Network", "Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", session=session, events=events)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                          "mobile": False}, session=session, events=events)
        self.send("Page.navigate", {"url": url}, session=session, events=events)
        self.wait_for("Page.loadEventFired", events)
        time.sleep(0.5)  # let late console messages arrive
        shot = self.send("Page.captureScreenshot", {"format": "png"}, session=session, events=events)
        size = self.send("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight",
                                              "returnByValue": True}, session=session, events=events)
        self.send("Target.closeTarget", {"targetId": target}, events=events)
        visit = Visit(url, screenshot=base64.b64decode(shot["data"]), height=int(size["result"]["value"]))
        for event in events:
            visit.requests += _request(event)
            visit.console_errors += _error(event)
        return visit


def _request(event: dict) -> list[str]:
    return [event["params"]["request"]["url"]] if event["method"] == "Network.requestWillBeSent" else []


def _error(event: dict) -> list[str]:
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return [json.dumps(params.get("args"))]
    if method == "Runtime.exceptionThrown":
        return [json.dumps(params.get("exceptionDetails"))]
    if method == "Log.entryAdded" and params["entry"]["level"] == "error":
        return [params["entry"]["text"]]
    if method == "Network.loadingFailed":
        return [f"loading failed: {params.get('errorText')}"]
    return []
