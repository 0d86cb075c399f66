"""A config's module:factory task or strategy: where it is imported from, what it receives, clear errors."""

import sys

import pytest

from funcgrad import ConfigError, Task
from funcgrad.cli.config import load_config
from funcgrad.cli.plugins import build_strategy, build_task

TASK_MODULE = '''
import funcgrad as fg
from kb_facts import FACTS          # a neighbour module: importable because the folder is searched

def make_task(*, seed=0, n_hops=2, facts_per_hop=3):
    node = fg.LLM("answer", user="{question}")
    data = [fg.Example(f"e{i}", f"q{i} {seed} {n_hops} {facts_per_hop} {len(FACTS)}", "a") for i in range(3)]
    return fg.Task("kbqa", lambda p, x: node(p, question=x), fg.PromptState(), fg.exact_match, train=data, val=data, test=data)
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A researcher's folder: kbqa.py + kb_facts.py next to the config; the shell sits elsewhere."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "kbqa.py").write_text(TASK_MODULE)
    (folder / "kb_facts.py").write_text("FACTS = ('a', 'b')\n")
    (folder / "run.toml").write_text('[task]\nname = "kbqa:make_task"\nn_hops = 3\n\n[strategy]\nname = "backprop"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    yield folder
    for name in ("kbqa", "kb_facts", "mystrat"):
        sys.modules.pop(name, None)


def test_a_task_module_next_to_the_config_is_found_and_gets_exactly_the_config_keys(project):
    path_before = list(sys.path)
    config = load_config(project / "run.toml")
    assert config.config_dir == str(project.resolve())
    task = build_task(config.task, config.task_args, config_dir=config.config_dir)
    assert isinstance(task, Task) and task.train[0].x == "q0 0 3 3 2"   # seed, facts_per_hop: defaults; n_hops from the config
    assert sys.path == path_before                                      # the search path is restored


def test_the_working_directory_is_searched_too(project, monkeypatch):
    monkeypatch.chdir(project)
    assert build_task("kbqa:make_task", {"seed": 4}).train[0].x == "q0 4 2 3 2"


def test_a_key_the_factory_does_not_take_is_one_error_naming_it_and_the_accepted_arguments(project):
    with pytest.raises(ConfigError) as err:
        build_task("kbqa:make_task", {"n_hop": 3}, config_dir=project)
    assert str(err.value) == (
        "[task] n_hop = 3: task factory 'kbqa:make_task' does not accept an argument 'n_hop'; "
        "it accepts: seed, n_hops, facts_per_hop (every [task] key except name is passed to it as a keyword argument)"
    )


def test_a_missing_module_or_function_names_what_and_where(project, tmp_path):
    with pytest.raises(ConfigError, match=r"no module named 'kbqb' in .*project.*elsewhere and the installed packages"):
        build_task("kbqb:make_task", config_dir=project)
    with pytest.raises(ConfigError, match=r"module 'kbqa' \(.*kbqa.py\) has no function 'make_tsk'"):
        build_task("kbqa:make_tsk", config_dir=project)
    with pytest.raises(ConfigError, match='must look like "module:factory"'):
        build_task("kbqa:", config_dir=project)


def test_a_required_argument_missing_from_the_config_is_named(project):
    (project / "mystrat.py").write_text("import funcgrad.strategies as s\ndef make(*, depth):\n    return s.backprop()\n")
    with pytest.raises(ConfigError, match=r"\[strategy\] strategy 'mystrat:make' cannot be called with no arguments: .*depth"):
        build_strategy("mystrat:make", {}, config_dir=project)
    assert build_strategy("mystrat:make", {"depth": 2}, config_dir=project).name == "backprop"
