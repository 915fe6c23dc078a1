"""The documentation stays in step with the code: every setting documented, and the README's
quickstart question answered from the project's own docs."""

from __future__ import annotations

import re
from pathlib import Path

from bot.config import Settings
from bot.runtime import Runtime
from knowledge.loaders import expand_sources

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented_in_env_example() -> None:
    text = (ROOT / "deploy" / "env.example").read_text()
    documented = set(re.findall(r"^#?\s?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - documented == set()
    assert documented - fields == set()


def test_readme_quickstart_runs_the_test_command_of_ci() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -e '.[test]' && pytest" in readme
    assert "pip install -e '.[test]' && pytest" in ci


async def test_quickstart_question_is_answered_from_the_docs(runtime: Runtime) -> None:
    readme = (ROOT / "README.md").read_text()
    question = re.search(r'bot ask "([^"]+)"', readme)
    assert question, "the quickstart asks a question"
    report = await runtime.ingestor().ingest(expand_sources([str(ROOT / "docs")]))
    assert report.failures == [] and report.documents >= 4
    hits = await runtime.knowledge_retriever().retrieve(question.group(1), 5)
    assert Path(hits[0].uri).name in {"architecture.md", "webhook.md"}
