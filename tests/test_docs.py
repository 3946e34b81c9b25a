"""The documentation and the workflow's conventions: the mkdocs site builds with --strict (a broken
link or anchor fails), its configuration reference covers every key of the schema, the links of
the README files resolve, `snakemake --lint` finds nothing but the conda/container advice,
`snakefmt --check` passes, and the Snakemake workflow catalog's files are there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCHEMA = REPO / "src" / "clipscale" / "schemas" / "config.schema.yaml"


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "-f", str(root / "mkdocs.yml"), "-d", str(site)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    r = mkdocs_build(REPO, out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_docs_build_strict(site):
    pages = {p.parent.name for p in site.glob("*/index.html")}
    assert {"configuration", "cache", "cluster", "science", "benchmarks", "steps", "dedup", "finetune"} <= pages
    # the benchmarks page is benchmarks/README.md itself, included when the site is built
    assert "Training through the pipeline vs by hand" in (site / "benchmarks" / "index.html").read_text()


def schema_keys(schema: dict, prefix: str = ""):
    for name, s in (schema.get("properties") or {}).items():
        yield prefix + name, s
        yield from schema_keys(s, prefix + name + ".")
        extra = s.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("properties"):
            yield from schema_keys(extra, f"{prefix}{name}.<name>.")
        items = s.get("items")
        if isinstance(items, dict) and items.get("properties"):
            yield from schema_keys(items, f"{prefix}{name}[].")


def test_configuration_reference_covers_the_schema(site):
    """The reference is generated from the schema at build time: every key, with its description."""
    import html
    page = (site / "configuration" / "index.html").read_text()
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", page)))
    keys = list(schema_keys(yaml.safe_load(SCHEMA.read_text())))
    assert len(keys) > 150
    for key, s in keys:
        assert key in text, key
        if s.get("description"):
            assert " ".join(s["description"].split())[:60] in text, key
    assert "dedup.radius" in text and "train.threads" in text and "execution only" in text


def test_a_broken_link_fails_the_build(tmp_path):
    """The check can fail: the same site with one link to a page that does not exist."""
    root = tmp_path / "repo"
    for name in ("mkdocs.yml", "docs", "benchmarks/README.md", "src/clipscale/schemas/config.schema.yaml"):
        dst = root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, dst)
    page = root / "docs" / "cache.md"
    page.write_text(page.read_text() + "\nSee [the gone page](gone.md).\n")
    r = mkdocs_build(root, tmp_path / "site")
    assert r.returncode != 0 and "gone.md" in r.stdout + r.stderr


@pytest.mark.parametrize("readme", ["README.md", "config/README.md", "benchmarks/README.md", "docs/index.md"])
def test_readme_links_resolve(readme):
    """Relative links of the READMEs (which mkdocs does not build) point at files that exist."""
    path = REPO / readme
    links = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    for link in links:
        if re.match(r"[a-z]+://", link) or link.startswith("#"):
            continue
        target = (path.parent / link.split("#")[0]).resolve()
        assert target.exists(), f"{readme}: {link}"


def test_readme_is_a_guide():
    """The README stays a short guide with the two commands; the rest lives in docs/."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert "bash scripts/setup.sh && .venv/bin/snakemake --cores 2" in text
    assert "\nbash scripts/test.sh\n" in text
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()


def test_lint_clean(tmp_path):
    """Snakemake's linter finds nothing in the whole workflow but the advice to declare a conda
    environment or container per rule (the project installs one virtual environment instead)."""
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    r = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                        "--configfile", str(REPO / "config" / "config.yaml"), "--cores", "2", "--lint"],
                       capture_output=True, text=True, env=env, timeout=300)
    out = r.stdout + r.stderr
    blocks = out.split("Lints for ")[1:]
    assert len(blocks) >= 30, out[-3000:]  # one per rule
    for block in blocks:
        assert block.startswith("rule "), block  # no lint of a snakefile as a whole
        items = [line.strip() for line in block.splitlines() if line.strip().startswith("* ")]
        assert items == ["* Specify a conda environment or container for each rule.:"], block


def test_snakefmt_clean():
    files = [REPO / "Snakefile", REPO / "workflow" / "rules"]
    r = subprocess.run([str(BIN / "snakefmt"), "--check", *map(str, files)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_catalog_conventions():
    """What the Snakemake workflow catalog looks for: its usage file, config/README.md, a LICENSE,
    and a min_version the pinned Snakemake satisfies."""
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage["software-stack-deployment"]) == {"conda", "singularity", "singularity+conda"}
    assert usage["mandatory-flags"]["desc"] and "--cores" in usage["mandatory-flags"]["flags"]
    assert "configuration reference" in (REPO / "config" / "README.md").read_text()
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    need = re.search(r'^min_version\("([\d.]+)"\)', (REPO / "Snakefile").read_text(), re.M).group(1)
    pinned = re.search(r"^snakemake==([\d.]+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert tuple(map(int, pinned.split("."))) >= tuple(map(int, need.split(".")))
