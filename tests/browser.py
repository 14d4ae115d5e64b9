"""Headless Chromium (Debian's ``chromium``) for tests that look at pages as a browser does."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# Without the networking flags Chromium keeps trying to reach Google's hosts from a closed network.
_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# Appended to a copy of the page: after every resource has loaded, list each <img> with its decoded
# size, or BROKEN when the browser could not load or decode it.
_PROBE = """<script>window.addEventListener("load", () => {
  const size = i => i.complete && i.naturalWidth > 0 ? i.naturalWidth + "x" + i.naturalHeight : "BROKEN";
  const lines = [...document.images].map(i => i.getAttribute("src") + " " + size(i));
  const out = document.createElement("pre"); out.id = "image-probe"; out.textContent = lines.join("\\n");
  document.body.appendChild(out);
});</script>"""


def chromium() -> str:
    """The Chromium binary; scripts/test.sh installs Debian's package where it is missing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed: run scripts/test.sh, or apt-get install chromium")
    return path


def _run(page: Path, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [chromium(), *_FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    return done.stdout


def image_sizes(page: Path) -> dict[str, tuple[int, int] | None]:
    """Every image of an HTML page as Chromium loaded it: ``src -> (width, height)``, None if broken."""
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    try:
        dom = _run(probe, "--virtual-time-budget=10000", "--dump-dom")
    finally:
        probe.unlink()
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', dom, re.S)
    if found is None:
        raise AssertionError(f"the probe never ran on {page}: the page did not finish loading")
    sizes: dict[str, tuple[int, int] | None] = {}
    for line in filter(None, found.group(1).splitlines()):
        src, size = line.rsplit(" ", 1)
        sizes[src] = None if size == "BROKEN" else tuple(int(v) for v in size.split("x"))
    return sizes


def screenshot(page: Path, out: Path, width: int = 1400, height: int = 6000) -> None:
    """A PNG of the rendered page, for people to look at."""
    _run(page, f"--screenshot={out.resolve()}", f"--window-size={width},{height}", "--hide-scrollbars")
