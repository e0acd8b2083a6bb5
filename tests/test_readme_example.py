"""The README's composition example runs as written and actually learns."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- readme-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README lost its marked example"
    return match.group(1)


def test_readme_example_trains_a_user_model_with_a_policy(tmp_path, monkeypatch, capsys):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 20
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["test_accuracy"] > 0.9
    assert namespace["ctx"].step == 15 * (1257 // 64 + 1)
    assert "test accuracy" in capsys.readouterr().out


def test_fewshot_doc_example_meta_trains_a_user_loop(tmp_path, monkeypatch, capsys):
    """docs/meta-augmentation.md's loop (policy + learner without the CLI) runs and learns."""
    doc = README.parent / "docs" / "meta-augmentation.md"
    code = re.search(r"<!-- fewshot-example[^>]*-->\s*```python\n(.*?)```", doc.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(doc), "exec"), namespace)
    test = namespace["test"]
    assert test["tasks"] == 100
    # adapting from 10 points beats the unadapted prediction on held-out sinusoid tasks
    assert test["mse"] < 0.5 * test["pre_mse"], test
    assert "meta-test MSE" in capsys.readouterr().out, test
