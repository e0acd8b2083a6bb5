"""Every loop the docs show runs as written (the README's, and docs/own-loop.md's with their
sizes turned down in the fast suite); that they learn is checked once, in the slow suite."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README, OWN_LOOP = ROOT / "README.md", ROOT / "docs" / "own-loop.md"


def doc_block(path: Path, marker: str) -> str:
    """The python block after the comment `<!-- MARKER ... -->` in `path`."""
    match = re.search(rf"<!-- {re.escape(marker)}[^>]*-->\s*```python\n(.*?)```", path.read_text(), re.S)
    assert match, f"{path.name} lost its {marker} block"
    return match.group(1)


def run(code: str, path: Path, sizes: dict[str, str] | None = None, names: dict | None = None) -> dict:
    """Execute a doc block, its size line `NAMES = VALUES` replaced where `sizes` says, with
    `names` defined."""
    for line, values in (sizes or {}).items():
        code, count = re.subn(rf"^{re.escape(line)} = .*$", f"{line} = {values}", code, flags=re.M)
        assert count == 1, f"{path.name}: no line '{line} = ...' to size"
    namespace: dict = dict(names or {})
    exec(compile(code, str(path), "exec"), namespace)
    return namespace


def test_the_readme_example_trains_a_user_model_with_a_policy(tmp_path, monkeypatch, capsys):
    code = doc_block(README, "readme-example")
    assert len(code.strip().splitlines()) <= 20
    monkeypatch.chdir(tmp_path)
    namespace = run(code, README)
    assert namespace["ctx"].step == 15 * (1257 // 64 + 1)
    assert "test accuracy" in capsys.readouterr().out


def test_the_own_few_shot_classification_loop_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = run(doc_block(OWN_LOOP, "own-loop: fewshot-classification"), OWN_LOOP,
                    {"steps, test_tasks": "2, 3"})
    assert 0 <= namespace["accuracy"] <= 1 and "meta-test accuracy" in capsys.readouterr().out


def test_the_own_few_shot_regression_loop_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = run(doc_block(OWN_LOOP, "own-loop: fewshot-regression"), OWN_LOOP, {"steps, test_tasks": "3, 4"})
    assert namespace["test"]["tasks"] == 4 and "meta-test MSE" in capsys.readouterr().out


def test_the_own_loop_with_learned_policies_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = run(doc_block(OWN_LOOP, "own-loop: minibatch-learned"), OWN_LOOP,
                    {"accuracies, epochs, batch_size": "{}, 1, 256"})
    assert set(namespace["accuracies"]) == {"metaaugment", "rl-mixup"}
    assert namespace["policy"].history, "RL-Mixup's agent recorded its epochs"


def test_the_many_ranks_loop_on_two_ranks_is_the_one_process_loop(tmp_path, monkeypatch, capsys):
    """own-loop.md's many-ranks loop, as one process and as two ranks (parallel.lockstep, its
    communicator in place of torchrun's): the same model, each rank having loaded half."""
    from metaaugment.parallel.lockstep import LockstepRanks

    monkeypatch.chdir(tmp_path)
    code = doc_block(OWN_LOOP, "own-loop: many-ranks")
    one = run(code, OWN_LOOP, {"epochs, batch_size": "1, 64"})
    assert "test accuracy" in capsys.readouterr().out
    # each lockstep rank runs the block with its communicator in place of torchrun's
    ranks = LockstepRanks(2).run(lambda comm: run(code, OWN_LOOP, {"epochs, batch_size": "1, 64", "comm": "COMM"},
                                                  {"COMM": comm}))
    assert len(ranks[0]["batch"]) == len(one["batch"]) // 2  # each rank loaded its half
    for rank in ranks:
        for mine, expected in zip(rank["model"].parameters(), one["model"].parameters()):
            torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_the_doc_loops_learn(tmp_path, monkeypatch, capsys):
    """As written: a learned policy's loop beats 90% on digits, and meta-learning with a task
    policy beats chance (20%) on 5-way glyphs and halves the unadapted sinusoid error."""
    monkeypatch.chdir(tmp_path)
    learned = run(doc_block(OWN_LOOP, "own-loop: minibatch-learned"), OWN_LOOP)
    assert all(accuracy > 0.9 for accuracy in learned["accuracies"].values()), learned["accuracies"]
    regression = run(doc_block(OWN_LOOP, "own-loop: fewshot-regression"), OWN_LOOP)["test"]
    assert regression["mse"] < 0.5 * regression["pre_mse"], regression
    classification = run(doc_block(OWN_LOOP, "own-loop: fewshot-classification"), OWN_LOOP)
    assert classification["accuracy"] > 0.4, classification["accuracy"]


PAPER_TABLES = ("metaaugment.md", "rl-mixup.md", "meta-augmentation.md")


@pytest.mark.parametrize("page", PAPER_TABLES)
def test_each_papers_line_by_line_table_names_code_that_exists_and_judges_every_row(page):
    """docs/<paper>.md's "The paper, line by line": every `path.py:Name[.attr]` names a file
    and a class, function, method or constant in it, and every row says how it stands."""
    import re

    text = (ROOT / "docs" / page).read_text()
    section = text.split("## The paper, line by line", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| paper |")]
    assert len(rows) >= 15
    for row in rows:
        verdict = row.rstrip(" |").rsplit("|", 1)[-1]
        assert re.search(r"\b(as the paper|as the authors' code|as the MAML code base|deviates|missing)",
                         verdict), row
    references = re.findall(r"`([\w/]+\.py):([A-Za-z_][\w.]*)`", section)
    assert len(references) >= 15
    for path, name in references:
        source = (ROOT / path).read_text()
        for part in name.split("."):
            assert re.search(rf"^\s*(class|def)\s+{part}\b|^\s*{part}\s*[:=]|\bself\.{part}\b", source, re.M), \
                f"{path}:{name}"


def test_every_file_and_test_a_doc_names_exists():
    """A path of the repository (tests/..., metaaugment/..., perf/..., docs/...) or a test
    function named in the README, the docs or a docstring of the package exists."""
    import re

    root = Path(__file__).resolve().parents[1]
    path_pattern = re.compile(r"(?<![\w/.-])((?:tests|metaaugment|perf|docs|scripts|tasks|cli|\.ci)/[\w./-]*"
                              r"\.(?:py|md|sh|toml|png|json))\b")
    tests_source = "\n".join(p.read_text() for p in (root / "tests").glob("*.py"))
    defined = set(re.findall(r"def (test_\w+)", tests_source))
    texts = {path: path.read_text() for path in [root / "README.md", *sorted((root / "docs").glob("*.md")),
                                                  *sorted((root / "metaaugment").rglob("*.py")),
                                                  *sorted((root / "cli").glob("*.py"))]}
    missing = [(path.name, name) for path, text in texts.items() for name in path_pattern.findall(text)
               if not (root / name).exists()]
    # a test named in prose: `test_name` in backquotes, as the docs cite them
    missing += [(path.name, name) for path, text in texts.items() if path.suffix == ".md"
                for name in re.findall(r"`(test_[a-z0-9_]+)`", text) if name not in defined]
    assert missing == []


def test_the_adaaug_example_searches_with_a_user_loop():
    """docs/adaaug.md's loop: the head learns on steps 0 and 3, and the class policy it
    reports is a distribution per class that has seen rows."""
    torch.manual_seed(0)
    path = ROOT / "docs" / "adaaug.md"
    code = doc_block(path, "adaaug-example")
    namespace = run(code.replace("policy.setup(ctx)\n", "policy.setup(ctx)\n"
                                 "initial = [p.detach().clone() for p in policy.head.parameters()]\n"), path)
    policy, probabilities = namespace["policy"], namespace["probabilities"]
    assert any(not torch.equal(a, b) for a, b in zip(namespace["initial"], policy.head.parameters()))
    assert probabilities.shape == (4, 15) and torch.allclose(probabilities.sum(1), torch.ones(4))
    assert int(policy.class_counts.sum()) == 6 * 32


def test_the_mlti_example_meta_trains_a_user_model(tmp_path, monkeypatch, capsys):
    """docs/mlti.md's loop: a meta-step on interpolated tasks, then a meta-test score."""
    monkeypatch.chdir(tmp_path)
    path = ROOT / "docs" / "mlti.md"
    namespace = run(doc_block(path, "mlti-example"), path, {"steps, test_tasks": "2, 3"})
    assert namespace["scores"]["tasks"] == 3 and "pre_accuracy" in namespace["metrics"]
    assert namespace["policy"].describe()["interpolated_at"] == ["input", "body.0", "body.1", "body.2"]
    assert "meta-test accuracy" in capsys.readouterr().out
