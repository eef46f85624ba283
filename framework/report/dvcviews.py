"""The HTML page template `dvc plots show` fills, with Vega, Vega-Lite and Vega Embed inlined so the
plots open without a network (DVC's own page loads them from a CDN).

`make plots` writes it to .dvc/plots/offline.html (generated, not committed: ~0.9 MB) and runs
``dvc plots show --html-template .dvc/plots/offline.html``. It is not set as ``plots.html_template``
in .dvc/config: a fresh clone has no such file until make writes it, and DVC then fails rather than
fall back. The JavaScript comes from the vl-convert-python wheel, which bundles these libraries;
nothing is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fclab.framework.io import write_text

# DVC embeds Vega-Lite 5 specifications; the newest 5.x that vl-convert bundles renders them.
VEGA_LITE = "5.21"


def offline_template() -> str:
    """A page for dvc_render's HTML class: ``{plot_divs}`` and ``{refresh_tag}`` placeholders, no
    ``{scripts}`` (DVC's CDN script tags), and the bundle inline."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE).replace("</script", "<\\/script")
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n{refresh_tag}\n<title>DVC plots (fclab)</title>\n"
            f"<script>\n{bundle}\n</script>\n"
            "<style>table { border-spacing: 15px; }</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n")


def main(argv: list[str]) -> None:
    path = Path(argv[0] if argv else ".dvc/plots/offline.html")
    write_text(path, offline_template())


if __name__ == "__main__":
    main(sys.argv[1:])
