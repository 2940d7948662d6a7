"""Screenshots of what a person looks at, taken with headless Chromium (Debian's `chromium` package):
the HTML run report, and optionally a page of the Prefect UI (e.g. the artifacts page).

    python -m bench.screenshot_report artifacts/runs/tiny-cpu/report/report.html --output /tmp/report.png
    python -m bench.screenshot_report --url http://127.0.0.1:4200/artifacts --output /tmp/prefect.png
    python -m bench.screenshot_report --prefect http://127.0.0.1:4200 --run tiny-cpu --output /tmp/prefect/

With --prefect: the artifacts page and the latest version of each of the run's summary, eval and report
artifacts, one PNG each in the --output folder. (The UI reads its API address from the server's
PREFECT_UI_API_URL; a server started on another port than 4200 needs it set, or the pages stay empty.)

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


def prefect_pages(server: str, run: str) -> dict[str, str]:
    """{name: UI url}: the artifacts list, and the latest version of each of `run`'s summary, eval and report
    artifacts (read from the server's REST API)."""
    import json
    import urllib.request

    server = server.rstrip("/")
    request = urllib.request.Request(
        f"{server}/api/artifacts/latest/filter",
        data=json.dumps({"limit": 200}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        latest = json.loads(r.read())
    pages = {"artifacts": f"{server}/artifacts"}
    for a in sorted(latest, key=lambda a: a["key"]):
        key = a["key"]
        if key.startswith(f"{run}-") and key.endswith(("-summary", "-eval", "-report")):
            pages[key] = f"{server}/artifacts/artifact/{a['latest_id']}"
    return pages


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", nargs="?", help="report.html to take (a file path)")
    p.add_argument("--url", help="a page to take instead (e.g. the Prefect UI's artifacts page)")
    p.add_argument(
        "--prefect", metavar="SERVER", help="Prefect server (http://host:port): its artifact pages"
    )
    p.add_argument("--run", help="with --prefect: the run name the artifact keys start with")
    p.add_argument("--output", default="report-screenshot.png", help="PNG to write (a folder with --prefect)")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=4000, help="window height: the part of the page captured")
    p.add_argument("--wait-ms", type=int, default=8000, help="virtual time for the page to load and render")
    args = p.parse_args(argv)
    if not args.report and not args.url and not args.prefect:
        p.error("give a report.html, --url or --prefect")
    if args.prefect and not args.run:
        p.error("--prefect needs --run")
    browser = find_browser()
    if browser is None:
        print(
            f"skipped: no Chromium found (looked for {', '.join(BROWSERS)}; Debian: apt-get install chromium)"
        )
        return 0
    if args.prefect:
        for name, url in prefect_pages(args.prefect, args.run).items():
            out = Path(args.output) / f"prefect-{name}.png"
            screenshot(browser, url, out, args.width, args.height, args.wait_ms)
            print(f"screenshot of {url}: {out}")
        return 0
    url = args.url or Path(args.report).resolve().as_uri()
    screenshot(browser, url, Path(args.output), args.width, args.height, args.wait_ms)
    print(f"screenshot of {url}: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
