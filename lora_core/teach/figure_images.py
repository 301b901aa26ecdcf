"""Lesson figures that show everywhere: plotly's interactive figure, and a PNG of it beside.

A committed lesson is read in two kinds of places. JupyterLab, Notebook 7 and VS Code draw plotly's JSON
mimetype (`application/vnd.plotly.v1+json`) as the interactive figure; GitHub's notebook view runs no
JavaScript and shows the `image/png` of the same output instead. So each figure is sent as both, in one
output: the JSON (no plotly.js bundle in the file) and a PNG drawn by kaleido 1.x in a headless Chromium.

kaleido 1.x normally uses a Chrome it downloads (`kaleido_get_chrome`). Nothing is downloaded here:
choreographer, kaleido's browser driver, takes the browser named by BROWSER_PATH, else the first of
`chromium`, `google-chrome`, ... on PATH (Debian's /usr/bin/chromium, the one the browser tests drive).
plotly.js comes from the plotly package and MathJax, which kaleido fetches from a CDN, is turned off.

One browser is started per kernel, at the first figure, and kept: starting it takes seconds, a figure
then takes about a second. Where kaleido or a browser is missing, or the browser fails, a figure stays
interactive only: a lesson never fails for want of a picture.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import io
import os
import threading
import warnings
from importlib.metadata import PackageNotFoundError, version

import plotly.io as pio
from PIL import Image
from plotly.io.base_renderers import MimetypeRenderer

RENDERER = "lora_png"                    # the name registered in plotly.io.renderers
INTERACTIVE = "plotly_mimetype"          # plotly's JSON mimetype: interactive, and no plotly.js in the file
BOTH = f"{INTERACTIVE}+{RENDERER}"       # the default renderer once images are on
MAX_WIDTH, MAX_HEIGHT = 900, 800         # px at scale 1: with compact_png, a figure's PNG is 10-40 kB
START_TIMEOUT_S, FIGURE_TIMEOUT_S = 120.0, 60.0


def find_browser() -> str | None:
    """The Chromium kaleido would drive (BROWSER_PATH, then PATH), or None when there is none to run."""
    from choreographer.browsers.chromium import Chromium  # kaleido's dependency: only when kaleido is there

    path = Chromium.find_browser(skip_local=False)
    return path if path and os.access(path, os.X_OK) else None


def why_no_images() -> str | None:
    """None when PNGs can be drawn here; otherwise what is missing, in words a learner can act on."""
    try:
        kaleido_version = version("kaleido")
    except PackageNotFoundError:
        return "kaleido is not installed (pip install -r requirements-dev.txt)"
    if not kaleido_version.split(".")[0].isdigit() or int(kaleido_version.split(".")[0]) < 1:
        return f"kaleido {kaleido_version} is too old: plotly 6+ needs kaleido 1.x"
    if find_browser() is None:
        where = os.environ.get("BROWSER_PATH")
        return (f"BROWSER_PATH={where!r} is not an executable browser" if where
                else "no Chromium or Chrome on PATH (Debian: apt-get install chromium)")
    return None


def compact_png(png: bytes) -> bytes:
    """The same picture in a 256-colour palette: about 4× smaller, and a chart looks the same.

    A plotly chart has a few flat colours plus anti-aliasing; a median-cut palette keeps them and a
    colour scale's steps (checked by eye on line charts and a Viridis heatmap). A PNG with transparent
    pixels is kept as it is: an RGB palette would paint them black.
    """
    image = Image.open(io.BytesIO(png))
    if image.mode == "RGBA" and image.getchannel("A").getextrema() != (255, 255):
        return png
    small = io.BytesIO()
    image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
        .save(small, "PNG", optimize=True)
    return small.getvalue() if small.tell() < len(png) else png


class Browser:
    """One headless Chromium held by kaleido, on an event loop of its own thread (the kernel has its own loop)."""

    def __init__(self) -> None:
        import kaleido

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="kaleido", daemon=True).start()

        async def start() -> kaleido.Kaleido:
            # n=1: one tab, figures come one at a time. mathjax=False: no CDN fetch, and no TeX in our titles.
            k = kaleido.Kaleido(n=1, mathjax=False, timeout=FIGURE_TIMEOUT_S)
            await k.open()
            return k

        self.kaleido = self.run(start(), START_TIMEOUT_S)
        atexit.register(self.close)

    def run(self, coroutine, timeout: float):
        """Run `coroutine` on the browser's loop and wait for it; errors and timeouts surface here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def png(self, fig_dict: dict, width: int, height: int, scale: float) -> bytes:
        """The figure drawn as PNG bytes, width × height layout pixels times `scale`."""
        opts = dict(format="png", width=width, height=height, scale=scale)
        return self.run(self.kaleido.calc_fig(fig_dict, opts=opts), FIGURE_TIMEOUT_S + 10)

    def close(self) -> None:
        """Close the browser (at exit): a Chromium left behind would outlive the kernel."""
        try:
            self.run(self.kaleido.close(), 30)
        except Exception:  # at exit, a browser that is already gone is fine
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)


class PngExporter:
    """Starts the browser at the first figure and keeps it; after a failure, stops trying (warned once)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.browser: Browser | None = None
        self.failed: str | None = None

    def size(self, fig_dict: dict) -> tuple[int, int]:
        """The figure's own layout size (plotly's 700 × 500 when unset), capped to keep the file small."""
        layout = fig_dict.get("layout", {})
        return min(int(layout.get("width") or 700), MAX_WIDTH), min(int(layout.get("height") or 500), MAX_HEIGHT)

    def png(self, fig_dict: dict) -> bytes | None:
        """The figure as PNG bytes, or None when no PNG can be drawn (the figure stays interactive only)."""
        if self.failed:
            return None
        try:
            if self.browser is None:
                self.browser = Browser()
            return compact_png(self.browser.png(fig_dict, *self.size(fig_dict), self.scale))
        except Exception as err:  # any failure of the browser must leave the lesson running
            self.failed = f"{type(err).__name__}: {err}"
            warnings.warn(f"figures stay interactive only, the PNG export failed: {self.failed}", stacklevel=3)
            return None


class StaticImageRenderer(MimetypeRenderer):
    """A plotly renderer that adds `image/png` to a figure's output; BOTH combines it with plotly_mimetype.

    plotly shallow-copies a renderer for every figure it shows, so the browser lives in the shared exporter.
    """

    def __init__(self, exporter: PngExporter) -> None:
        self.exporter = exporter

    def to_mimebundle(self, fig_dict: dict) -> dict:
        png = self.exporter.png(fig_dict)
        return {} if png is None else {"image/png": base64.b64encode(png).decode("ascii")}


def use_static_images() -> str:
    """Make every plotly figure show as interactive + PNG where it can; return one line saying which.

    Registers the PNG renderer and sets plotly's default renderer: `plotly_mimetype+lora_png` when kaleido
    and a browser are here, `plotly_mimetype` alone (interactive only) when they are not.
    """
    problem = why_no_images()
    if problem is None:
        if RENDERER not in pio.renderers:
            pio.renderers[RENDERER] = StaticImageRenderer(PngExporter())
        pio.renderers.default = BOTH
        return f"figures: interactive + PNG (kaleido {version('kaleido')}, {find_browser()})"
    pio.renderers.default = INTERACTIVE
    return f"figures: interactive only, no PNG ({problem})"
