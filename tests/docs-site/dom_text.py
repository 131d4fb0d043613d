#!/usr/bin/env python3
"""Prints the visible text of an HTML document (a DOM that Chromium dumped).

The text runs are joined as the browser shows them (highlighted code is many elements: "new", " ",
"EventLoop"), with each run of white space made one space, and a line break after each block element.
Script, style and template contents are left out. usage: dom_text.py FILE
"""
import sys
from html.parser import HTMLParser


class Text(HTMLParser):
    SKIP = {"script", "style", "template", "noscript"}
    BLOCKS = {"p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "section", "article",
              "nav", "header", "footer", "dt", "dd", "br"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.depth += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth:
            self.depth -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


parser = Text()
with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
    parser.feed(f.read())
for line in "".join(parser.parts).split("\n"):
    line = " ".join(line.split())
    if line:
        print(line)
