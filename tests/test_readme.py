"""The README's two commands are exactly what CI runs."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    assert len(commands) >= 2, "README must give the install+run and the test commands"
    for cmd in commands[:2]:
        assert cmd in ci, f"CI does not run the README command: {cmd}"
