"""The lab's web site: static pages and assets (served by nginx) plus shared content data.

The site is a small fictional shop/blog ("Larkspur Tools").  Static HTML pages link to each other
and to CSS/JS/images so that browsers and crawlers have a real link graph to walk; dynamic routes
(login, search, blog, feed, API, health) live in ``bench.lab.app`` behind nginx ``proxy_pass``.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

SITE_NAME = "Larkspur Tools"

SECTIONS: dict[str, list[str]] = {
    "": ["about", "contact", "pricing", "faq", "team", "careers", "privacy", "terms", "press", "partners"],
    "docs": ["getting-started", "installation", "configuration", "api-keys", "webhooks", "rate-limits",
             "troubleshooting", "changelog", "migration-guide", "security", "billing", "integrations"],
    "products": ["hammer-pro", "cordless-drill", "laser-level", "tool-belt", "saw-kit", "workbench",
                 "safety-goggles", "measuring-tape", "clamp-set", "sander"],
}

BLOG_POSTS: list[tuple[str, str]] = [
    ("choosing-a-cordless-drill", "Choosing a cordless drill"),
    ("workshop-safety-basics", "Workshop safety basics"),
    ("ten-clamps-you-need", "Ten clamps you actually need"),
    ("sharpening-chisels", "Sharpening chisels by hand"),
    ("laser-levels-explained", "Laser levels explained"),
    ("building-a-workbench", "Building a workbench in a weekend"),
    ("winter-tool-storage", "Storing tools over winter"),
    ("our-new-warehouse", "Our new warehouse is open"),
]

SEARCH_TERMS = ["drill", "hammer", "laser level", "workbench", "clamp", "safety", "sander", "saw",
                "battery", "warranty", "shipping", "discount", "gloves", "tape measure", "bits"]

_WORDS = ["tool", "steel", "grip", "battery", "torque", "blade", "level", "bench", "clamp", "safety",
          "warranty", "quality", "precise", "durable", "workshop", "project", "wood", "metal", "finish",
          "measure", "cut", "drill", "sand", "polish", "build", "repair"]


def static_pages() -> list[str]:
    """URL paths of every static HTML page (the ``.html`` files nginx serves)."""
    pages = ["/"]
    for section, names in SECTIONS.items():
        if section:
            pages.append(f"/{section}/")
        pages += [f"/{section}/{n}.html" if section else f"/{n}.html" for n in names]
    return pages


def dynamic_pages() -> list[str]:
    return ["/blog/", *[f"/blog/{slug}" for slug, _ in BLOG_POSTS], "/login", "/search?q=drill"]


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A tiny valid PNG so image requests return real image bytes of plausible sizes."""
    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(
        b"IEND", b"")


def _para(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + "."


def page_html(title: str, body: str, images: list[str]) -> str:
    """Common layout: every page pulls the same CSS/JS (cached by browsers) plus its own images."""
    nav = " | ".join(f'<a href="{href}">{label}</a>' for href, label in (
        ("/", "Home"), ("/products/", "Products"), ("/docs/", "Docs"), ("/blog/", "Blog"),
        ("/pricing.html", "Pricing"), ("/about.html", "About"), ("/login", "Sign in")))
    imgs = "".join(f'<img src="{src}" alt="">' for src in images)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - {SITE_NAME}</title>
<link rel="stylesheet" href="/static/css/site.css">
<link rel="alternate" type="application/rss+xml" href="/feed.xml">
<link rel="icon" href="/favicon.ico">
<script src="/static/js/vendor.js" defer></script><script src="/static/js/app.js" defer></script>
</head><body><header><img src="/static/img/logo.png" alt="{SITE_NAME}"><nav>{nav}</nav>
<form action="/search" method="get"><input name="q"><button>Search</button></form></header>
<main><h1>{title}</h1>{imgs}{body}</main>
<footer><a href="/privacy.html">Privacy</a> | <a href="/terms.html">Terms</a> |
<a href="/contact.html">Contact</a> | <a href="/feed.xml">RSS</a></footer></body></html>
"""


def build_docroot(root: Path) -> None:
    """Write every static file under ``root`` (deterministic: the site is the same for all seeds)."""
    rng = random.Random("lab-site")
    (root / "static" / "css").mkdir(parents=True, exist_ok=True)
    (root / "static" / "js").mkdir(parents=True, exist_ok=True)
    (root / "static" / "img").mkdir(parents=True, exist_ok=True)
    (root / "static" / "css" / "site.css").write_text(
        "body{font-family:sans-serif;margin:0}header{background:#234}" + "\n.x{}" * 800)
    (root / "static" / "js" / "vendor.js").write_text("/* vendor bundle */\n" + "var a=1;\n" * 4000)
    # app.js fetches /api/status on every page, like a real site's XHR beacon.
    (root / "static" / "js" / "app.js").write_text(
        "fetch('/api/status').then(r=>r.json()).then(s=>{document.body.dataset.v=s.version});\n")
    (root / "static" / "img" / "logo.png").write_bytes(_png(120, 40, (30, 60, 90)))
    (root / "static" / "img" / "hero.png").write_bytes(_png(400, 150, (200, 120, 40)))
    (root / "favicon.ico").write_bytes(_png(16, 16, (30, 60, 90)))

    all_pages = [*static_pages(), "/blog/"]
    for section, names in SECTIONS.items():
        for name in names:
            images = []
            if section == "products":
                img = f"/static/img/{name}.png"
                (root / img.lstrip("/")).write_bytes(_png(rng.randint(150, 300), rng.randint(100, 200),
                                                          (rng.randrange(256), 90, 120)))
                images.append(img)
            related = rng.sample(all_pages, 5)
            links = "".join(f'<li><a href="{h}">{h}</a></li>' for h in related)
            body = "".join(f"<p>{_para(rng, rng.randint(40, 120))}</p>" for _ in range(rng.randint(2, 6)))
            html = page_html(name.replace("-", " ").title(), body + f"<ul>{links}</ul>", images)
            path = root / section / f"{name}.html" if section else root / f"{name}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(html)
        if section:
            links = "".join(f'<li><a href="/{section}/{n}.html">{n}</a></li>' for n in names)
            (root / section / "index.html").write_text(
                page_html(section.title(), f"<ul>{links}</ul>", ["/static/img/hero.png"]))
    home_links = "".join(f'<li><a href="{p}">{p}</a></li>' for p in all_pages[1:])
    posts = "".join(f'<li><a href="/blog/{s}">{t}</a></li>' for s, t in BLOG_POSTS[:4])
    (root / "index.html").write_text(page_html(
        "Welcome", f"<p>{_para(rng, 60)}</p><ul>{home_links}</ul><h2>From the blog</h2><ul>{posts}</ul>",
        ["/static/img/hero.png"]))
    (root / "robots.txt").write_text(
        "User-agent: *\nDisallow: /admin/\nDisallow: /account\nDisallow: /search\n"
        "Sitemap: http://www.larkspur-tools.example/sitemap.xml\n")
    urls = [*static_pages(), "/blog/", *[f"/blog/{s}" for s, _ in BLOG_POSTS]]
    (root / "sitemap.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        + "".join(f"<url><loc>http://www.larkspur-tools.example{u}</loc></url>\n" for u in urls)
        + "</urlset>\n")


def make_users(seed: int, n: int) -> dict[str, str]:
    """Site accounts (username -> password) for the benign simulator; attackers never see this."""
    rng = random.Random(f"lab-users/{seed}")
    first = ["anna", "ben", "carla", "dev", "elif", "farid", "greta", "hugo", "ines", "jon", "kim", "lena",
             "marco", "nina", "omar", "pia", "quentin", "rosa", "sven", "tara", "umar", "vera", "wes", "yara"]
    users: dict[str, str] = {}
    while len(users) < n:
        name = f"{rng.choice(first)}.{rng.choice(first)}{rng.randint(1, 99)}"
        users[name] = "".join(rng.choice("abcdefghijkmnpqrstuvwxyz23456789") for _ in range(12))
    return users


def write_users(path: Path, users: dict[str, str]) -> None:
    path.write_text(json.dumps(users))
