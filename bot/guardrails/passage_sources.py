"""The benign sources of the passage data (`bot.guardrails.passage_data`) and how each split
of it assigns them to training or held-out (a training-time module, issue 13).

Split "a" (the default; rounds 1-4): train = python-django-doc, git-doc and the README long
descriptions of the distributions with `bucket(name, 2) == 0`; heldout = postgresql-doc-15,
debian-reference-en and the distributions with `bucket(name, 2) == 1`. Both of its held-out
measurements are used up (rounds 3 and 4), so it may no longer judge a model.

Split "b" (round 5): split A's held-out benign sources become training sources (all of the
READMEs are train), and the held-out sources are Debian documentation never used in this
project before, chosen by licence and HTML format before any score was seen: sqlite3-doc
(public domain), apache2-doc's English manual (Apache-2.0), cmake-doc (BSD-3-Clause) and
bind9-doc's reference manual (MPL-2.0; not shipped). The attack split is the same in both.

Split "c" (round 6): both earlier splits' sources are training sources, and the held-out
sources are again Debian documentation never used in this project before, chosen by licence and
Sphinx HTML format before any score was seen: python-flask-doc (BSD-3-Clause),
borgbackup-doc (BSD-3-Clause), python-celery-doc (its docs are CC-BY-SA-4.0: measured, not
shipped) and rsyslog-doc (GPL-3.0+ and Apache-2.0: measured, not shipped). No installed
distribution shares a name with them (`HELDOUT_DISTRIBUTIONS` are left out if one does).

Split "d" (round 7): the sources of A, B and C train; held out, chosen by licence and HTML
format before any score was seen: sphinx-doc (BSD-2-Clause), python-pytest-doc (MIT),
python-werkzeug-doc (BSD-3-Clause) and haproxy-doc (GPL-2.0-or-later: measured, not shipped).
The READMEs of the installed pytest, sphinx and werkzeug distributions are left out.

Split "e" (round 10): the sources of A to D train; held out, chosen by licence and format
before any score was seen: python-djangorestframework-doc (BSD-2-Clause, MkDocs HTML),
python-dask-doc (BSD-3-Clause), python-black-doc (MIT), python-cookiecutter-doc
(BSD-3-Clause), python-flask-security-doc (MIT) and docker-doc (Apache-2.0; Markdown, the
register of a team's wiki). READMEs of distributions of those names are left out.

Split "f" (round 11): the sources of A to E train; held out, chosen by licence and Sphinx HTML
format before any score was seen: python-cherrypy3-doc (BSD-3-Clause), python-cmd2-doc (MIT),
python-fsspec-doc (BSD-3-Clause), python-behave-doc (BSD-2-Clause), python-factory-boy-doc
(MIT), python-doit-doc (MIT), python-flask-limiter-doc (MIT), python-flask-login-doc (MIT) and
python-django-filters-doc (BSD-3-Clause).

Split "g" (round 12): the sources of A to F train; held out, chosen by licence and Sphinx HTML
format before any score was seen: python-cachelib-doc, python-configobj-doc,
python-flask-babel-doc, python-django-taggit-doc, python-django-reversion-doc and
python-flask-restful-doc (BSD-3-Clause); python-blinker-doc, python-bs4-doc,
python-graphql-core-doc, python-apispec-doc and python-cbor2-doc (MIT).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

_SPHINX = ("_sources", "_static", "_downloads", "_images", "genindex.html", "search.html")


@dataclass(frozen=True)
class DocSource:
    """HTML documentation of one Debian package: files `root.glob(pattern)`, without those
    with a path part in `skip`."""

    name: str
    root: Path
    pattern: str
    licence: str
    split: str
    skip: tuple[str, ...] = ()


SPLIT_A = (
    DocSource("python-django-doc", Path("/usr/share/doc/python-django-doc/html"), "**/*.html",
              "BSD-3-Clause", "train",
              ("_modules", "_sources", "genindex.html", "search.html", "py-modindex.html")),
    DocSource("git-doc", Path("/usr/share/doc/git-doc"), "**/*.html", "GPL-2.0-only", "train"),
    DocSource("postgresql-doc-15", Path("/usr/share/doc/postgresql-doc-15/html"), "*.html",
              "PostgreSQL", "heldout", ("bookindex.html",)),
    DocSource("debian-reference-en", Path("/usr/share/debian-reference"), "*.en.html",
              "GPL-2.0-or-later", "heldout"),
)

SPLIT_B = (
    *(replace(s, split="train") for s in SPLIT_A),
    DocSource("sqlite3-doc", Path("/usr/share/doc/sqlite3"), "**/*.html", "public-domain",
              "heldout", ("sitemap.html", "keyword_index.html", "toc.html")),
    DocSource("apache2-doc", Path("/usr/share/doc/apache2-doc/manual/en"), "**/*.html",
              "Apache-2.0", "heldout",
              ("sitemap.html", "directives.html", "quickreference.html", "license.html")),
    DocSource("cmake-doc", Path("/usr/share/doc/cmake-doc/html"), "**/*.html", "BSD-3-Clause",
              "heldout", _SPHINX),
    DocSource("bind9-doc", Path("/usr/share/doc/bind9-doc/arm"), "*.html", "MPL-2.0",
              "heldout", _SPHINX),
)

SPLIT_C = (
    *(replace(s, split="train") for s in SPLIT_B),
    DocSource("python-flask-doc", Path("/usr/share/doc/python-flask-doc/html"), "**/*.html",
              "BSD-3-Clause", "heldout", (*_SPHINX, "py-modindex.html", "404.html")),
    DocSource("borgbackup-doc", Path("/usr/share/doc/borgbackup-doc/html"), "**/*.html",
              "BSD-3-Clause", "heldout", _SPHINX),
    DocSource("python-celery-doc", Path("/usr/share/doc/python-celery-doc/html"), "**/*.html",
              "CC-BY-SA-4.0", "heldout", (*_SPHINX, "_modules", "py-modindex.html")),
    DocSource("rsyslog-doc", Path("/usr/share/doc/rsyslog-doc/html"), "**/*.html",
              "GPL-3.0-or-later AND Apache-2.0", "heldout", _SPHINX),
)

SPLIT_D = (
    *(replace(s, split="train") for s in SPLIT_C),
    DocSource("sphinx-doc", Path("/usr/share/doc/sphinx-doc/html"), "**/*.html",
              "BSD-2-Clause", "heldout", (*_SPHINX, "_modules", "py-modindex.html")),
    DocSource("python-pytest-doc", Path("/usr/share/doc/python-pytest-doc/html"), "**/*.html",
              "MIT", "heldout", (*_SPHINX, "_modules", "py-modindex.html", "404.html")),
    DocSource("python-werkzeug-doc", Path("/usr/share/doc/python-werkzeug-doc/html"),
              "**/*.html", "BSD-3-Clause", "heldout", (*_SPHINX, "py-modindex.html", "404.html")),
    DocSource("haproxy-doc", Path("/usr/share/doc/haproxy-doc/html"), "*.html",
              "GPL-2.0-or-later", "heldout"),
)

SPLIT_E = (
    *(replace(s, split="train") for s in SPLIT_D),
    DocSource("python-djangorestframework-doc",
              Path("/usr/share/doc/python3-djangorestframework/html"), "**/*.html",
              "BSD-2-Clause", "heldout", ("search.html", "404.html")),
    DocSource("python-dask-doc", Path("/usr/share/doc/python-dask-doc/html"), "**/*.html",
              "BSD-3-Clause", "heldout", (*_SPHINX, "_modules", "py-modindex.html")),
    DocSource("python-black-doc", Path("/usr/share/doc/python-black-doc/html"), "**/*.html",
              "MIT", "heldout", (*_SPHINX, "_modules", "py-modindex.html")),
    DocSource("python-cookiecutter-doc", Path("/usr/share/doc/python-cookiecutter-doc/html"),
              "**/*.html", "BSD-3-Clause", "heldout", (*_SPHINX, "_modules", "py-modindex.html")),
    DocSource("python-flask-security-doc", Path("/usr/share/doc/python-flask-security-doc/html"),
              "**/*.html", "MIT", "heldout", (*_SPHINX, "_modules", "py-modindex.html")),
    DocSource("docker-doc", Path("/usr/share/doc/docker-doc"), "**/*.md", "Apache-2.0",
              "heldout"),
)

_SPHINX_API = (*_SPHINX, "_modules", "py-modindex.html", "404.html")
SPLIT_F = (
    *(replace(s, split="train") for s in SPLIT_E),
    *(DocSource(name, Path(f"/usr/share/doc/{name}/html"), "**/*.html", licence, "heldout",
                _SPHINX_API)
      for name, licence in (("python-cherrypy3-doc", "BSD-3-Clause"),
                            ("python-cmd2-doc", "MIT"), ("python-fsspec-doc", "BSD-3-Clause"),
                            ("python-behave-doc", "BSD-2-Clause"),
                            ("python-factory-boy-doc", "MIT"), ("python-doit-doc", "MIT"),
                            ("python-flask-limiter-doc", "MIT"),
                            ("python-flask-login-doc", "MIT"),
                            ("python-django-filters-doc", "BSD-3-Clause"))),
)

SPLIT_G = (
    *(replace(s, split="train") for s in SPLIT_F),
    DocSource("python-cachelib-doc", Path("/usr/share/doc/python3-cachelib/html"), "**/*.html",
              "BSD-3-Clause", "heldout", _SPHINX_API),
    *(DocSource(name, Path(f"/usr/share/doc/{name}/html"), "**/*.html", licence, "heldout",
                _SPHINX_API)
      for name, licence in (("python-configobj-doc", "BSD-3-Clause"),
                            ("python-flask-babel-doc", "BSD-3-Clause"),
                            ("python-django-taggit-doc", "BSD-3-Clause"),
                            ("python-django-reversion-doc", "BSD-3-Clause"),
                            ("python-flask-restful-doc", "BSD-3-Clause"),
                            ("python-blinker-doc", "MIT"), ("python-bs4-doc", "MIT"),
                            ("python-graphql-core-doc", "MIT"), ("python-apispec-doc", "MIT"),
                            ("python-cbor2-doc", "MIT"))),
)

#: Debian sources per split name (`passage_data --split`).
SPLITS = {"a": SPLIT_A, "b": SPLIT_B, "c": SPLIT_C, "d": SPLIT_D, "e": SPLIT_E, "f": SPLIT_F,
          "g": SPLIT_G}
#: Distributions whose README would be a held-out source's own text, left out of a split.
HELDOUT_DISTRIBUTIONS = {"c": frozenset({"flask", "borgbackup", "celery"}),
                         "d": frozenset({"sphinx", "pytest", "werkzeug"}),
                         "e": frozenset({"djangorestframework", "dask", "black", "cookiecutter",
                                         "flask-security", "flask-security-too", "docker"}),
                         "f": frozenset({"cherrypy", "cmd2", "fsspec", "behave", "factory-boy",
                                         "doit", "flask-limiter", "flask-login",
                                         "django-filter"}),
                         "g": frozenset({"cachelib", "configobj", "flask-babel", "django-taggit",
                                         "django-reversion", "flask-restful", "blinker",
                                         "beautifulsoup4", "bs4", "graphql-core", "apispec",
                                         "cbor2"})}


def readme_split(split: str, name_bucket: int) -> str:
    """The split of a distribution's README: by `bucket(name, 2)` in split "a", always train in
    later splits."""
    return "train" if split != "a" or name_bucket == 0 else "heldout"
