"""Refresh docs/screenshot.png from the real app: `make screenshot` (or `.venv/bin/python docs/screenshot.py`).

Starts `python -m app --ingest-if-empty` on the default store (data/notes), asks the README's
question in a headless Chromium (Debian `chromium`), opens the first source so the highlighted
sentence shows, saves the page, and stops the app. Tests never write this file.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
QUESTION = "When was the water heater last flushed, and who did it?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        print(f"{CHROMIUM} missing — `apt-get install -y chromium`", file=sys.stderr)
        return 1
    port = free_port()
    app = subprocess.Popen([sys.executable, "-m", "app", "--ingest-if-empty", "--port", str(port)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if app.poll() is not None or time.monotonic() > deadline:
                    print("the app did not start", file=sys.stderr)
                    return 1
                time.sleep(1)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            box = page.get_by_placeholder("Type a message...")
            box.fill(QUESTION)
            box.press("Enter")
            expect(page.get_by_text("answered by", exact=False)).to_be_visible(timeout=300_000)
            page.get_by_text("Source: ", exact=False).first.click()
            page.wait_for_timeout(500)
            page.wait_for_function("() => document.getAnimations().every(a => a.playState !== 'running')")
            page.screenshot(path=str(ROOT / "docs" / "screenshot.png"))
            browser.close()
        print("wrote docs/screenshot.png", file=sys.stderr)
        return 0
    finally:
        app.terminate()
        app.wait(timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
