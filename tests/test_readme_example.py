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
