#!/usr/bin/env python3
"""Checks that no internal link of the built docs site is broken.

Reads every HTML file under the site folder (and every toc.json, whose entries the pages load with
JavaScript), collects the href and src attributes that point inside the site, and checks that each target
file exists and, when the link names a fragment (#id), that the target page has an element with that id.
Links to other sites are counted, never followed (the check runs offline).

usage: check_links.py SITE_DIR
Prints one line per broken link and a last line "links: N checked, N broken, N external"; exits 1 when a
link is broken or no page was found.
"""
import json
import os
import sys
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit


class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links = []
        self.ids = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in ("href", "src"):
                self.links.append(value)
            elif name == "id" or (name == "name" and tag == "a"):
                self.ids.add(value)


def parse(path, cache):
    if path not in cache:
        page = Page()
        with open(path, encoding="utf-8", errors="replace") as f:
            page.feed(f.read())
        cache[path] = page
    return cache[path]


def toc_hrefs(node):
    if isinstance(node, dict):
        for key in ("href", "topicHref", "tocHref", "homepage"):
            value = node.get(key)
            if isinstance(value, str) and value:
                yield value
        for value in node.values():
            yield from toc_hrefs(value)
    elif isinstance(node, list):
        for item in node:
            yield from toc_hrefs(item)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    site = os.path.realpath(sys.argv[1])
    cache = {}
    sources = []  # (file, link)
    for root, _, files in os.walk(site):
        for name in sorted(files):
            path = os.path.join(root, name)
            if name.endswith(".html"):
                for link in parse(path, cache).links:
                    sources.append((path, link))
            elif name == "toc.json":
                with open(path, encoding="utf-8") as f:
                    for link in toc_hrefs(json.load(f)):
                        sources.append((path, link))

    pages = sum(1 for p in cache)
    checked = broken = external = 0
    for source, link in sources:
        parts = urlsplit(link)
        if parts.scheme or link.startswith("//"):
            external += 1
            continue
        if not parts.path and not parts.fragment:
            continue
        checked += 1
        if parts.path:
            target = os.path.normpath(os.path.join(os.path.dirname(source), unquote(parts.path)))
            if parts.path.endswith("/") or os.path.isdir(target):
                target = os.path.join(target, "index.html")
        else:
            target = source
        relative = os.path.relpath(source, site)
        if not target.startswith(site + os.sep) and target != site:
            broken += 1
            print(f"broken: {relative}: {link} (outside the site)")
            continue
        if not os.path.isfile(target):
            broken += 1
            print(f"broken: {relative}: {link} (no file {os.path.relpath(target, site)})")
            continue
        if parts.fragment and target.endswith(".html"):
            if unquote(parts.fragment) not in parse(target, cache).ids:
                broken += 1
                print(f"broken: {relative}: {link} (no id '{parts.fragment}' in {os.path.relpath(target, site)})")

    print(f"links: {pages} pages, {checked} checked, {broken} broken, {external} external")
    return 1 if broken or pages == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
