"""Documentation-register passages with BIPIA-style indirect injections, to train and evaluate
the passage rail (a training-time script, issue 13).

    python -m bot.guardrails.passage_data --attacks DIR/train.csv --out /tmp/passages \\
        [--split a|b|c|d|e] [--seed 0] [--sample tests/fixtures/passages/heldout_sample.jsonl]

Benign passages: the HTML documentation of Debian packages (`passage_sources.SPLITS`) and the
README long descriptions (the body of `METADATA`) of the installed Python distributions, parsed
by `knowledge.loaders` and chunked by `knowledge.chunking` at the bot's defaults (192 tokens, 32
overlap), as retrieval returns them. Chunks under `MIN_CHARS` characters (navigation bars) and
repeats are dropped; at most `--max-per-source` chunks per Debian package. Run it without
training-only packages on the path (the READMEs follow the installed distributions).

Splits are by source, never by passage, and do not depend on the seed (`passage_sources`;
this project's README is left out). `--split a` (the default, rounds 1-4): train =
python-django-doc, git-doc and the distributions with `bucket(name, 2) == 0`; heldout =
postgresql-doc-15, debian-reference-en and the distributions with `bucket(name, 2) == 1`.
`--split b` (round 5): train = those four packages and every distribution; heldout =
sqlite3-doc, apache2-doc (English manual), cmake-doc and bind9-doc. `--split c` (round 6):
train = all eight and every distribution; heldout = python-flask-doc, borgbackup-doc,
python-celery-doc and rsyslog-doc. `--split d` (round 7): train = those twelve and every
distribution but pytest, sphinx and werkzeug; heldout = sphinx-doc, python-pytest-doc,
python-werkzeug-doc and haproxy-doc. `--train-wheels DIR` (round 8) adds the READMEs of the
wheels in DIR as training sources (`pypi:<name>`, skipped when installed). `--split e` (round
10): train = the sources of A to D; heldout = python-djangorestframework-doc, python-dask-doc,
python-black-doc, python-cookiecutter-doc, python-flask-security-doc and docker-doc
(Markdown). Attacks, in every split: the
label-1 rows of S-Labs `train.csv` (MIT), deduplicated ignoring case and whitespace;
`bucket(lower-cased text, 5) == 0` goes to heldout, the rest to train.

Injections: one attack per passage, at a placement of `PLACEMENTS` in turn: plain text at the
start, at the sentence boundary nearest the middle, or at the end; or a block between two lines
holding it in an HTML comment, a Markdown link title, image alt text, a comment in a fenced code
block, a Markdown table cell or a quoted e-mail. `--decoy-ratio` of the benign passages get the
same kinds of block holding a sentence of another passage, so a wrapper alone is no sign.

Output: `train.jsonl`, `heldout.jsonl` (deterministic for a seed and the installed packages),
one JSON object per passage:

- `text`; `label` (1 = carries an injection); `source` (Debian package or `pypi:<name>`);
  `licence` (SPDX-like); `doc` (file under the package's doc root, or "METADATA <version>");
- `placement` (one of `PLACEMENTS`) and `attack` (as inserted: whitespace collapsed, characters
  that would close its wrapper replaced); null for benign;
- `span` [start, end): everything inserted (the attack with its wrapper: comment, link sentence,
  code block, table, e-mail); `attack_span`: the attack alone, `text[start:end] == attack`; a
  span-level filter should cut at least `attack_span` and at most `span`. Null for benign;
- `decoy`: the block kind of a benign passage that got a decoy block, else null (synthetic:
  measure the benign flag rate on `decoy == null`).

`manifest.json` lists the sources (split, licence, benign chunks) and the attack counts.
`--sample FILE` writes the held-out fixture shipped for the tests: `--sample-sizes` plain
benign passages, passages with decoys and injected ones (placements in equal shares; default
300, 60, 150; round 7: 1000, 200, 600), from permissively licensed sources only
(`is_permissive`).
"""

from __future__ import annotations

import argparse
import csv
import email.parser
import hashlib
import importlib.metadata
import json
import random
import re
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from bot.errors import KnowledgeError
from bot.guardrails.passage_inject import PLACEMENTS, WRAPPERS, insert
from bot.guardrails.passage_sources import (
    HELDOUT_DISTRIBUTIONS,
    SPLITS,
    DocSource,
    readme_split,
)
from knowledge.chunking import chunk_sections
from knowledge.embedders.tokenizer import count_tokens
from knowledge.loaders import LoadedDocument, load_file, parse

#: The bot's defaults (`bot.config`: CHUNK_TOKENS, CHUNK_OVERLAP_TOKENS).
CHUNK_TOKENS = 192
OVERLAP_TOKENS = 32
MIN_CHARS = 120
#: Licences whose text may be shipped (SPDX ids); see `is_permissive`.
PERMISSIVE = frozenset({"MIT", "MIT-0", "BSD-2-Clause", "BSD-3-Clause", "0BSD", "BSD",
                        "Apache-2.0", "PSF-2.0", "Python-2.0", "PostgreSQL", "public-domain"})
SKIP_DISTRIBUTIONS = frozenset({"switchboard"})


@dataclass(frozen=True)
class Record:
    """One output line (the module docstring describes the fields)."""

    text: str
    label: int
    source: str
    licence: str
    doc: str
    placement: str | None = None
    attack: str | None = None
    span: tuple[int, int] | None = None
    attack_span: tuple[int, int] | None = None
    decoy: str | None = None


def bucket(key: str, n: int) -> int:
    """A stable bucket in [0, n) of a string (sha256), independent of seeds and runs."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16) % n


def chunk_document(doc: LoadedDocument, source: str, licence: str, name: str) -> list[Record]:
    """The document's chunks as the bot makes them, without those under `MIN_CHARS`."""
    drafts = chunk_sections(doc.title, doc.sections, chunk_tokens=CHUNK_TOKENS,
                            overlap_tokens=OVERLAP_TOKENS, count_tokens=count_tokens)
    return [Record(d.text, 0, source, licence, name) for d in drafts if len(d.text) >= MIN_CHARS]


def debian_chunks(src: DocSource) -> list[Record]:
    out: list[Record] = []
    for path in sorted(src.root.glob(src.pattern)):
        rel = path.relative_to(src.root)
        if any(part in src.skip for part in rel.parts) or not path.is_file():
            continue
        try:
            doc = load_file(str(path))
        except KnowledgeError:
            continue
        out += chunk_document(doc, src.name, src.licence, str(rel))
    return out


_LICENCE_NAMES = ((re.compile(r"\bmit\b(?!-cmu)|\bexpat\b"), "MIT"),
                  (re.compile(r"\bbsd\b"), "BSD"), (re.compile(r"\bapache\b"), "Apache-2.0"),
                  (re.compile(r"\bpsfl?\b|python software foundation"), "PSF-2.0"))


def _licence_name(text: str) -> str:
    """An SPDX-like id for a free-text licence name (a License header's first line or a
    classifier), or the text itself when it is not a known permissive one."""
    text = text.strip()
    low = text.lower()
    if text in PERMISSIVE or " AND " in text or " OR " in text or "gpl" in low \
            or "general public" in low:  # an SPDX id or expression, or a copyleft licence
        return text
    return next((spdx for pattern, spdx in _LICENCE_NAMES if pattern.search(low)), text)


def licence_of(headers: dict[str, list[str]]) -> str:
    """The declared licence of a distribution: its License-Expression, else the License
    header's first line and the licence classifiers, mapped to SPDX-like ids and joined by
    " AND "; "unknown" when nothing is declared."""
    if expr := (headers.get("License-Expression") or [""])[0].strip():
        return expr
    names: list[str] = []
    first = (headers.get("License") or [""])[0].strip().splitlines()
    if first and first[0].strip() and first[0].strip().upper() != "UNKNOWN":
        names.append(_licence_name(first[0]))
    for c in headers.get("Classifier", []):
        parts = [p.strip() for p in c.split("::")]
        if parts[0] == "License" and parts[-1] not in ("OSI Approved", "DFSG approved"):
            names.append(_licence_name(parts[-1]))
    return " AND ".join(dict.fromkeys(names)) or "unknown"


def is_permissive(licence: str) -> bool:
    """Whether text under `licence` (as `licence_of` gives it) may be shipped: every id of an
    AND expression, or one of an OR expression without AND, is in `PERMISSIVE`."""
    ids = [t for t in re.split(r"[\s()]+", licence) if t and t not in ("AND", "OR", "WITH")]
    if not ids:
        return False
    if " OR " in licence and " AND " not in licence:
        return any(i in PERMISSIVE for i in ids)
    return all(i in PERMISSIVE for i in ids)


def wheel_metadata(folder: Path) -> list[str]:
    """The METADATA files of the wheels (`*.whl`) in `folder`, sorted by file name."""
    out: list[str] = []
    for path in sorted(folder.glob("*.whl")):
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            out.append(z.read(name).decode("utf-8", "replace"))
    return out


def readme_chunks(split_name: str = "a", extra: list[str] | None = None
                  ) -> list[tuple[Record, str]]:
    """Chunks of the README long descriptions of the installed distributions (`pypi:<name>`),
    each with the distribution's split in split `split_name` (`passage_sources.readme_split`),
    then those of the `extra` METADATA texts (`--train-wheels`), always train."""
    out: list[tuple[Record, str]] = []
    seen: set[str] = set()
    texts = [(dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "", False)
             for dist in importlib.metadata.distributions()]
    for raw, is_extra in [*texts, *((raw, True) for raw in extra or [])]:
        message = email.parser.Parser().parsestr(raw)
        name = re.sub(r"[-_.]+", "-", str(message.get("Name", ""))).lower()
        if not name or name in seen or name in SKIP_DISTRIBUTIONS or (
                name in HELDOUT_DISTRIBUTIONS.get(split_name, ())):
            continue
        seen.add(name)
        body = message.get_payload()
        if not isinstance(body, str) or len(body.strip()) < 200:
            continue
        headers = {k: [str(v) for v in message.get_all(k) or []]
                   for k in ("License-Expression", "License", "Classifier")}
        kind = str(message.get("Description-Content-Type", "")).lower()
        mime = "text/markdown" if kind.startswith("text/markdown") else "text/plain"
        try:
            doc = parse(body.encode("utf-8"), f"metadata:{name}", mime)
        except KnowledgeError:
            continue
        split = "train" if is_extra else readme_split(split_name, bucket(name, 2))
        version = f"METADATA {message.get('Version', '')}"
        out += [(c, split) for c in chunk_document(doc, f"pypi:{name}", licence_of(headers),
                                                   version)]
    return out


def load_attacks(path: Path) -> tuple[list[str], list[str]]:
    """(train, heldout) attack sentences: label-1 rows of the S-Labs CSV, whitespace collapsed,
    deduplicated ignoring case, split by `bucket(lower-cased text, 5) == 0` -> heldout."""
    train: list[str] = []
    heldout: list[str] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = " ".join(row["text"].split())
            if row["label"].strip() != "1" or not text or text.lower() in seen:
                continue
            seen.add(text.lower())
            (heldout if bucket(text.lower(), 5) == 0 else train).append(text)
    return train, heldout


def _sentences(chunks: list[Record], rng: random.Random, k: int = 5000) -> list[str]:
    """Up to k one-line sentences (40-160 characters) of the chunks, for decoy blocks."""
    found = [s for c in chunks for s in re.split(r"(?<=[.!?])\s+|\n+", c.text)
             if 40 <= len(s) <= 160]
    return rng.sample(found, min(k, len(found)))


def build_split(chunks: list[Record], attacks: list[str], rng: random.Random, *,
                injected_ratio: float = 0.5, decoy_ratio: float = 0.2) -> list[Record]:
    """Records of one split: every chunk as a benign passage (`decoy_ratio` of them, drawn at
    random, with a decoy block holding a sentence of another chunk), plus
    `injected_ratio * len(chunks)` injected copies of chunks drawn at random, placements in
    turn, attacks in a shuffled cycle. Shuffled."""
    pool = _sentences(chunks, rng)
    records: list[Record] = []
    n_decoy = round(decoy_ratio * len(chunks)) if pool else 0
    kinds = {i: WRAPPERS[j % len(WRAPPERS)]
             for j, i in enumerate(rng.sample(range(len(chunks)), n_decoy))}
    for i, c in enumerate(chunks):
        if kind := kinds.get(i):
            text = insert(c.text, rng.choice(pool), kind, rng).text
            records.append(replace(c, text=text, decoy=kind))
        else:
            records.append(c)
    order = list(attacks)
    rng.shuffle(order)
    hosts = rng.sample(chunks, min(len(chunks), round(injected_ratio * len(chunks))))
    for j, c in enumerate(hosts if order else []):
        placement = PLACEMENTS[j % len(PLACEMENTS)]
        ins = insert(c.text, order[j % len(order)], placement, rng)
        records.append(replace(c, text=ins.text, label=1, placement=placement,
                               attack=ins.payload, span=ins.span, attack_span=ins.inner))
    rng.shuffle(records)
    return records


def shipped_sample(records: list[Record], rng: random.Random, n_benign: int = 300,
                   n_decoy: int = 60, n_injected: int = 150) -> list[Record]:
    """Records of permissively licensed sources only: `n_benign` plain benign ones, `n_decoy`
    with a decoy block and `n_injected` injected ones (placements in equal shares)."""
    ok = [r for r in records if is_permissive(r.licence)]
    plain = [r for r in ok if not r.label and not r.decoy]
    decoys = [r for r in ok if r.decoy]
    out = rng.sample(plain, min(n_benign, len(plain))) + rng.sample(decoys, min(n_decoy,
                                                                                len(decoys)))
    by_place = {p: [r for r in ok if r.placement == p] for p in PLACEMENTS}
    for i in range(n_injected):
        if left := by_place[PLACEMENTS[i % len(PLACEMENTS)]]:
            out.append(left.pop(rng.randrange(len(left))))
    rng.shuffle(out)
    return out


def to_json(record: Record) -> str:
    return json.dumps(asdict(record), ensure_ascii=False)


def write_jsonl(path: Path, records: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(to_json(r) + "\n" for r in records), encoding="utf-8")


def group(source: str) -> str:
    """The reporting group of a source: `pypi:*` for every distribution, else the source."""
    return "pypi:*" if source.startswith("pypi:") else source


def counts(name: str, records: list[Record]) -> str:
    lines = [f"{name}: {len(records)} passages, {sum(r.label for r in records)} injected"]
    for what, keys in (("source", [f"{group(r.source)} label {r.label}" for r in records]),
                       ("placement", [r.placement for r in records if r.placement]),
                       ("decoy", [r.decoy for r in records if r.decoy])):
        lines += [f"  {what:<9} {k:<32} {n}" for k, n in sorted(Counter(keys).items())]
    return "\n".join(lines)


def collect(max_per_source: int, seed: int, split_name: str = "a",
            extra: list[str] | None = None) -> dict[str, list[Record]]:
    """Benign chunks per split of `passage_sources.SPLITS[split_name]`, deduplicated, at most
    `max_per_source` per Debian package, in a seeded random order (one generator per source and
    per split)."""
    splits: dict[str, list[Record]] = {"train": [], "heldout": []}
    seen: set[str] = set()
    for src in SPLITS[split_name]:
        if not src.root.is_dir():
            raise SystemExit(f"{src.root} missing: apt-get install -y {src.name}")
        chunks = [c for c in debian_chunks(src) if c.text not in seen]
        chunks = list({c.text: c for c in chunks}.values())
        seen.update(c.text for c in chunks)
        random.Random(f"{seed}:{src.name}").shuffle(chunks)
        splits[src.split] += chunks[:max_per_source]
    for chunk, split in readme_chunks(split_name, extra):
        if chunk.text not in seen:
            seen.add(chunk.text)
            splits[split].append(chunk)
    for split, chunks in splits.items():
        random.Random(f"{seed}:{split}:order").shuffle(chunks)
    return splits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attacks", type=Path, required=True,
                        help="train.csv of the S-Labs prompt-injection dataset")
    parser.add_argument("--max-per-source", type=int, default=2500)
    parser.add_argument("--injected-ratio", type=float, default=0.5)
    parser.add_argument("--decoy-ratio", type=float, default=0.2)
    parser.add_argument("--sample", type=Path, help="write the shipped held-out sample here")
    parser.add_argument("--sample-sizes", type=int, nargs=3, default=(300, 60, 150),
                        metavar=("BENIGN", "DECOY", "INJECTED"),
                        help="the sample's plain benign, decoy and injected passages")
    parser.add_argument("--train-wheels", type=Path,
                        help="a folder of wheels whose READMEs are training sources too")
    parser.add_argument("--split", choices=sorted(SPLITS), default="a",
                        help="which sources are held out (module docstring)")
    args = parser.parse_args(argv)
    attacks = dict(zip(("train", "heldout"), load_attacks(args.attacks), strict=True))
    extra = wheel_metadata(args.train_wheels) if args.train_wheels else None
    splits = collect(args.max_per_source, args.seed, args.split, extra)
    sources = Counter((c.source, split, c.licence) for split, cs in splits.items() for c in cs)
    manifest = {"split": args.split, "seed": args.seed, "chunk_tokens": CHUNK_TOKENS,
                "overlap_tokens": OVERLAP_TOKENS,
                "attacks": {k: len(v) for k, v in attacks.items()},
                "sources": [{"source": s, "split": sp, "licence": lic, "benign_chunks": n}
                            for (s, sp, lic), n in sorted(sources.items())]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name, chunks in splits.items():
        records = build_split(chunks, attacks[name], random.Random(f"{args.seed}:{name}"),
                              injected_ratio=args.injected_ratio, decoy_ratio=args.decoy_ratio)
        write_jsonl(args.out / f"{name}.jsonl", records)
        print(counts(name, records))
    if args.sample is not None:
        n_benign, n_decoy, n_injected = args.sample_sizes
        sample = shipped_sample(records, random.Random(f"{args.seed}:sample"), n_benign,
                                n_decoy, n_injected)
        write_jsonl(args.sample, sample)
        print(counts(f"sample {args.sample}", sample))
        for src, lic in sorted({(r.source, r.licence) for r in sample}):
            print(f"  licence {src}: {lic}")


if __name__ == "__main__":
    main()
