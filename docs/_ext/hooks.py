"""MkDocs hooks of the documentation site.

``docs/changelog.md`` includes the repository's CHANGELOG.md (its one line, ``--8<-- "CHANGELOG.md"``). That file's
links are written from the repository root, as GitHub shows it: ``[Support](docs/support.md)``. On the site the
page lives in ``docs/``, so the hook includes the file itself and drops the ``docs/`` of those links; a link to a file
outside ``docs/`` stays as written and fails the strict build, which names it.
"""

from __future__ import annotations

import os
import re

INCLUDE = '--8<-- "CHANGELOG.md"'
_ROOT_RELATIVE_DOCS_LINK = re.compile(r"\]\(docs/")


def on_page_markdown(markdown: str, page, config, files) -> str:  # MkDocs' hook signature
    if page.file.src_uri != "changelog.md" or INCLUDE not in markdown:
        return markdown
    root = os.path.dirname(config.config_file_path)
    with open(os.path.join(root, "CHANGELOG.md"), encoding="utf-8") as f:
        changelog = _ROOT_RELATIVE_DOCS_LINK.sub("](", f.read())
    return markdown.replace(INCLUDE, changelog)
