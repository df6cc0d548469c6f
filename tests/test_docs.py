"""The specs users copy from must stay valid: README's example and every job in jobs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from geoseg.spec.job import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]


def test_readme_example_spec_is_valid():
    text = (REPO / "README.md").read_text()
    block = re.search(r"## A job spec\s+```yaml\n(.*?)```", text, re.S)
    assert block is not None
    spec = parse_spec(yaml.safe_load(block.group(1)), base=REPO)
    assert [m.type for m in spec.models] == ["crop_health", "sam"]


@pytest.mark.parametrize("job", sorted(p.name for p in (REPO / "jobs").glob("*.yaml")))
def test_example_jobs_are_valid(job):
    spec = load_spec(REPO / "jobs" / job)
    assert spec.output.path.endswith(".gpkg")


def test_readme_layout_is_generated_from_the_docstrings():
    from geoseg.testutils.layout import END, START, layout_markdown

    text = (REPO / "README.md").read_text()
    section = text.partition(START)[2].partition(END)[0].strip()
    assert section == layout_markdown(), "README's layout is stale: run python -m geoseg.testutils.layout"


def test_python_api_names_resolve():
    import geoseg

    for name in geoseg.__all__:
        assert getattr(geoseg, name) is not None, name
