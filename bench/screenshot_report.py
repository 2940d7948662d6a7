"""Screenshots of what a person looks at, taken with headless Chromium (Debian's `chromium` package):
the HTML run report, and optionally a page of the Prefect UI (e.g. the artifacts page).

    python -m bench.screenshot_report artifacts/runs/tiny-cpu/report/report.html --output /tmp/report.png
    python -m bench.screenshot_report --url http://127.0.0.1:4200/artifacts --output /tmp/prefect.png

Exits 0 with a message when no Chromium is installed, so it can sit in any script.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(browser: str, url: str, output: Path, width: int, height: int, wait_ms: int) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:  # a throw-away profile: no state from earlier runs
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={wait_ms}",  # lets a single-page app (the Prefect UI) fetch and render
            f"--screenshot={output}",
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 or not output.exists():
        raise SystemExit(f"chromium failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", nargs="?", help="report.html to take (a file path)")
    p.add_argument("--url", help="a page to take instead (e.g. the Prefect UI's artifacts page)")
    p.add_argument("--output", default="report-screenshot.png", help="PNG to write")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=4000, help="window height: the part of the page captured")
    p.add_argument("--wait-ms", type=int, default=8000, help="virtual time for the page to load and render")
    args = p.parse_args(argv)
    if not args.report and not args.url:
        p.error("give a report.html or --url")
    browser = find_browser()
    if browser is None:
        print(
            f"skipped: no Chromium found (looked for {', '.join(BROWSERS)}; Debian: apt-get install chromium)"
        )
        return 0
    url = args.url or Path(args.report).resolve().as_uri()
    screenshot(browser, url, Path(args.output), args.width, args.height, args.wait_ms)
    print(f"screenshot of {url}: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
